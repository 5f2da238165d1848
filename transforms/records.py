"""Typed records that flow between the pipeline's stages."""

import dataclasses
import enum
from typing import Dict, Optional, Tuple

import numpy as np


class Status(str, enum.Enum):
  """What happened to one (input, style) pair."""
  OK = 'ok'
  FAILED = 'failed'
  SKIPPED = 'skipped'


@dataclasses.dataclass(frozen=True, slots=True)
class InputFile:
  """One image to stylize.

  Attributes:
    uri: the image's canonical location (transforms.layout.canonical_uri):
      what is read and what the manifest names.
    key: where its outputs go below each style folder, without the output
      extension (transforms.layout.input_key); '' when it has an error.
    size_bytes: size reported by the file system listing (-1 if unknown).
    mtime: last-modified time reported by the listing (0 if unknown).
    version: the content version the listing reports (local: modification
      time in ns; GCS: CRC32C or generation; transforms/identity.py).
    todo: labels of the styles still to apply (set by the planning step;
      empty before it; narrowed to the image's class by routing).
    stale: those of todo for which an earlier run left an output or a
      marker (made for another identity): the marker is removed before the
      new output is written, and both if the pair fails now.
    error: why this input cannot be stylized (e.g. it is inside --output);
      it then becomes one failed row per style.
    image_class: the class a router gave the image (--route_model), else
      None; it travels with the image into every manifest row.
    class_score: the router's probability for image_class.
  """
  uri: str
  key: str = ''
  size_bytes: int = -1
  mtime: float = 0.0
  version: str = ''
  todo: Tuple[str, ...] = ()
  stale: Tuple[str, ...] = ()
  error: str = ''
  image_class: Optional[str] = None
  class_score: Optional[float] = None


@dataclasses.dataclass(frozen=True, slots=True)
class StyleRef:
  """A style as named on the command line: one image, or a weighted blend.

  Attributes:
    uri: the style image's URI, or for a blend 'uri=w,uri=w' (weights
      normalised to sum to 1); recorded in the manifest's style column.
    label: short unique name used in output paths (the file stem, or
      'stem-70+stem-30' for a blend).
    parts: (uri, weight) pairs; one pair with weight 1 for a plain style.
    digests: SHA-256 of each part's image file, read at launch ('' until
      then); workers check that the images they load still have them.
    fingerprint: the style's content identity (transforms/identity.py).
  """
  uri: str
  label: str
  parts: Tuple[Tuple[str, float], ...] = ()
  digests: Tuple[str, ...] = ()
  fingerprint: str = ''

  def __post_init__(self):
    if not self.parts:
      object.__setattr__(self, 'parts', ((self.uri, 1.0),))


@dataclasses.dataclass
class DecodedImage:
  """A decoded, upright, sRGB, resized content image (uint8 HxWx3).

  exif: the EXIF block its outputs carry (see transforms/metadata.py), b''
  for none; taken_at: the capture time (ISO 8601) where the photo gives it.
  """
  input: InputFile
  pixels: np.ndarray
  source_width: int
  source_height: int
  timings: Dict[str, float] = dataclasses.field(default_factory=dict)
  exif: bytes = b''
  taken_at: Optional[str] = None


@dataclasses.dataclass
class StylizedImage:
  """One stylized output (uint8 HxWx3) for one (input, style) pair, and
  what made it: the engine and precision that ran the network, and how the
  style strength was applied (models.base.STRENGTH_*)."""
  input: InputFile
  style: StyleRef
  pixels: np.ndarray
  source_width: int = 0
  source_height: int = 0
  timings: Dict[str, float] = dataclasses.field(default_factory=dict)
  exif: bytes = b''
  taken_at: Optional[str] = None
  engine: str = ''
  precision: str = ''
  strength_mode: str = ''


@dataclasses.dataclass
class Failure:
  """A stage failed for an input: for one style, or for all (style None).

  permanent: a failure of the image itself (unreadable data, over a limit,
  refused by the model), which the same input with the same settings would
  meet again: it is remembered (a failed marker) and not retried by the
  next run. I/O failures (a read or write that did not go through) are not.
  """
  input: InputFile
  error: str
  style: Optional[StyleRef] = None
  permanent: bool = False
  source_width: Optional[int] = None
  source_height: Optional[int] = None
  timings: Dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(slots=True)
class ManifestRow:
  """One manifest line: the fate of one (input, style) pair.

  With routing, an image whose class has no route is one `skipped` row with
  style None; image_class and class_score (JSON `class`, `class_score`) are
  set on the rows of every classified image.
  """
  input: str
  style: Optional[str]
  status: Status
  model: str
  output: Optional[str] = None
  error: Optional[str] = None
  width: Optional[int] = None
  height: Optional[int] = None
  source_width: Optional[int] = None
  source_height: Optional[int] = None
  params: Dict[str, object] = dataclasses.field(default_factory=dict)
  timings: Dict[str, float] = dataclasses.field(default_factory=dict)
  run_id: str = ''
  # Capture time (ISO 8601, from EXIF) where the photo gives it.
  taken_at: Optional[str] = None
  image_class: Optional[str] = None
  class_score: Optional[float] = None
  # Failed rows: True when an earlier run failed the same way on the same
  # input with the same settings, so it was not retried.
  known: Optional[bool] = None
  # What ran the network for this output ('openvino'/'tf', 'bf16'/'f32'):
  # this run for ok rows, the earlier run (its marker) for skipped ones.
  engine: Optional[str] = None
  precision: Optional[str] = None
  # How the style strength was applied to this output (written into
  # params.strength_mode, replacing the run's expectation).
  strength_mode: Optional[str] = None

  def to_json_dict(self) -> dict:
    d = dataclasses.asdict(self)
    strength_mode = d.pop('strength_mode')
    if strength_mode:
      d['params'] = dict(d['params'], strength_mode=strength_mode)
    d['status'] = self.status.value
    if self.status != Status.FAILED:
      del d['known']
    else:
      d['known'] = bool(self.known)
    # 'class' is a Python keyword, hence the attribute name; rows of images
    # that were not classified (no --route_model) keep their old shape.
    image_class = d.pop('image_class')
    class_score = d.pop('class_score')
    if image_class is not None:
      d['class'] = image_class
      d['class_score'] = (None if class_score is None else
                          round(float(class_score), 4))
    d['timings'] = {k: round(v, 4) for k, v in self.timings.items()}
    return d


# Errors that say nothing about the image: memory or I/O trouble of the
# moment (TensorFlow's ResourceExhaustedError, an unreachable bucket).
_TRANSIENT = ('MemoryError', 'ResourceExhaustedError', 'TimeoutError',
              'ConnectionError', 'UnavailableError', 'DeadlineExceededError',
              'LeaseLost')


def is_permanent(exc: BaseException) -> bool:
  """Whether an image's failure would happen again on the same image with
  the same settings (Failure.permanent), or was the moment's (memory, I/O)."""
  names = {cls.__name__ for cls in type(exc).__mro__}
  return not (names & set(_TRANSIENT)) and not isinstance(exc, OSError)


_NOISE = ('Graph execution error', 'Detected at node', '<stack traces',
          'File "', 'Traceback', '[[{{node', '[[')


def describe_error(exc: BaseException, limit: int = 300) -> str:
  """A one-line, readable reason for a failed row.

  TensorFlow errors start with 'Graph execution error:' and a node trace; the
  line that says what went wrong comes later, so noise lines are skipped.
  """
  text = str(getattr(exc, 'message', None) or exc)
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  useful = [l for l in lines if not l.startswith(_NOISE)]
  line = (useful or lines or [''])[0]
  if len(line) > limit:
    line = line[:limit - 3] + '...'
  name = type(exc).__name__
  return f'{name}: {line}' if line else name
