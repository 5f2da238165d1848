"""Execution engines behind the model adapters: TensorFlow or OpenVINO.

One concern per module:

- capabilities: what the CPU can do (bf16) and 'auto' -> a concrete
  engine and precision.
- bottleneck: finding the style vector in a Magenta-convention graph, by
  structure (no node names), on an abstract graph both engines map to.
- tf_split: a SavedModel / TF Hub model's concrete function, frozen and
  pruned into a predictor and a transfer function (the TF engine).
- ov_split: the same model converted to OpenVINO and cut at that vector.
- openvino_runtime: compiled models per input shape (THROUGHPUT hint), a
  shared pool of infer requests, safe for several calling threads.
- buckets: the padded shapes networks are compiled for, and uint8 pad/crop
  without float copies of whole images.

OpenVINO and TensorFlow are imported lazily by the modules that need them.
"""
