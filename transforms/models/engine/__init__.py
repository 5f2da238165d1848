"""Execution engines behind the model adapters: TensorFlow or OpenVINO.

One concern per module:

- capabilities: what the CPU can do (bf16) and 'auto' -> a concrete
  engine and precision.
- bottleneck: finding the style vector in a Magenta-convention graph, by
  structure (no node names), on an abstract graph both engines map to.
- tf_split: the loaded model's function graph pruned into a predictor and
  a transfer function (the TF engine).
- ov_split: the same model converted to OpenVINO and cut at that vector;
  uint8 input and output inside the network.
- ov_ir: that conversion made once per machine in a child process and
  cached as OpenVINO IR, so OpenVINO workers never import TensorFlow.
- openvino_runtime: a model compiled per input shape (THROUGHPUT hint), a
  shared pool of infer requests, safe for several calling threads.
- buckets: the padded shapes networks are compiled for, and padding and
  cropping in the network's own buffers.
- ov_bucketed: a two-input network run in bucket shapes (uint8 or float).
- tiles: tiling with every tile of an image in one batched call.
- quality: PSNR / MSE / low-pass MSE between engines (tests, benchmarks).

The adapters on top are transforms.models.split_model (SavedModel / TF Hub
models) and transforms.models.lite_batched (the TF Lite pair);
transforms.models.loader.load_stylizer picks them for a --model,
--engine and --precision. OpenVINO and TensorFlow are imported lazily.
"""
