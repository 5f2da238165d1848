"""Manifest rows are built here, and only here, for every status."""

import dataclasses
from typing import Dict, Iterable, List, Optional, Sequence

from transforms.records import (DecodedImage, Failure, InputFile,
                                ManifestRow, Status, StyleRef, StylizedImage)


def row_info(model: str, params: Dict, run_id: str) -> Dict:
  """What every row of one run carries besides its own pair."""
  return {'model': model, 'params': dict(params), 'run_id': run_id}


def _row(item: InputFile, style: Optional[StyleRef], status: Status,
         info: Dict, **fields) -> ManifestRow:
  """Every row: its input (with the class a router gave it), its style.

  The fields every row of a run shares (model, params, run id) are left
  out here and filled in when the row is written (with_run_fields): rows
  cross the pipeline's stages by the million, a third smaller without them.
  """
  del info  # The shared fields are added by with_run_fields.
  return ManifestRow(input=item.uri, style=style.uri if style else None,
                     status=status, model='', image_class=item.image_class,
                     class_score=item.class_score, **fields)


def with_run_fields(row: ManifestRow, info: Dict) -> ManifestRow:
  """The row as the manifest holds it: with the run's model, params, id."""
  return dataclasses.replace(row, model=info['model'],
                             params=dict(info['params']),
                             run_id=info['run_id'])


def ok_row(item: StylizedImage, output: str, info: Dict,
           timings: Dict[str, float]) -> ManifestRow:
  height, width = item.pixels.shape[:2]
  return _row(item.input, item.style, Status.OK, info, output=output,
              width=width, height=height, source_width=item.source_width,
              source_height=item.source_height, timings=dict(timings),
              taken_at=item.taken_at, engine=item.engine or None,
              precision=item.precision or None,
              strength_mode=item.strength_mode or None)


def skipped_row(item: InputFile, style: StyleRef, output: str,
                info: Dict, engine: str = '',
                precision: str = '') -> ManifestRow:
  """A pair an earlier run finished; engine and precision: what made its
  output (from its marker)."""
  return _row(item, style, Status.SKIPPED, info, output=output,
              engine=engine or None, precision=precision or None)


def known_failed_row(item: InputFile, style: StyleRef, error: str,
                     info: Dict) -> ManifestRow:
  """A pair that failed the same way in an earlier run (not retried)."""
  return _row(item, style, Status.FAILED, info, error=error, known=True)


def failed_input_rows(item: InputFile, styles: Sequence[StyleRef], error: str,
                      info: Dict) -> Iterable[ManifestRow]:
  """An input that cannot be worked on: one failed row per style."""
  for style in styles:
    yield _row(item, style, Status.FAILED, info, error=error, known=False)


def affected_styles(failure: Failure,
                    styles: Sequence[StyleRef]) -> List[StyleRef]:
  """The failed style, or every style still to do for the input."""
  return [failure.style] if failure.style is not None else [
      s for s in styles if s.label in failure.input.todo]


def failure_rows(failure: Failure, styles: Sequence[StyleRef],
                 info: Dict) -> Iterable[ManifestRow]:
  """A stage's Failure -> one failed row per affected style."""
  for style in affected_styles(failure, styles):
    yield _row(failure.input, style, Status.FAILED, info, known=False,
               error=failure.error, source_width=failure.source_width,
               source_height=failure.source_height,
               timings=dict(failure.timings))




def unrouted_row(image: DecodedImage, info: Dict) -> ManifestRow:
  """The one `skipped` row of an image whose class has no --route."""
  item = image.input
  return _row(item, None, Status.SKIPPED, info, error=(
      f'route: class {item.image_class!r} has no --route, so no style '
      'applies'), source_width=image.source_width,
              source_height=image.source_height, timings=dict(image.timings))
