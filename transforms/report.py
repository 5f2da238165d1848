"""report.html: a contact sheet of styles and input -> output thumbnails.

Thumbnails are made by the pipeline and written under {output}/report/, and
every link in the page is relative, so the report works wherever the output
folder is served or copied from: a local folder, a gs:// bucket behind a
browser, an archive.
"""

import html
import io
import logging
import posixpath
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
from PIL import Image

from transforms import overlap, paths
from transforms.decode import (DEFAULT_MAX_INPUT_BYTES, DEFAULT_MAX_PIXELS,
                               decode_image, read_file_within)
from transforms.layout import OutputLayout
from transforms.records import ManifestRow, Status, StyleRef
from transforms.waves import Wave
from transforms.storage import (remove_own_temporary, stat,
                                write_file)

logger = logging.getLogger(__name__)

THUMB_SIZE = 200
MAX_SAMPLES = 200
MAX_FAILURES = 500


def _thumb_bytes(uri: str, max_bytes: int = DEFAULT_MAX_INPUT_BYTES,
                 max_pixels: int = DEFAULT_MAX_PIXELS
                 ) -> Tuple[bytes, int, int]:
  """A thumbnail's JPEG bytes and size, read and decoded within the job's
  limits (--max_input_bytes, --max_input_pixels), as the inputs are."""
  data = read_file_within(uri, max_bytes)
  pixels, _, _ = decode_image(data, THUMB_SIZE, max_pixels)
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, 'JPEG', quality=85)
  return buf.getvalue(), pixels.shape[1], pixels.shape[0]


def make_thumb(uri: str, layout: OutputLayout,
               limits: Tuple[int, int] = (DEFAULT_MAX_INPUT_BYTES,
                                          DEFAULT_MAX_PIXELS)
               ) -> Dict[str, object]:
  """Writes a thumbnail of uri below {output}/report/; its relative path.
  limits: (--max_input_bytes, --max_input_pixels)."""
  rel = layout.thumb_rel(uri)
  try:
    data, w, h = _thumb_bytes(uri, *limits)
  except Exception as e:  # pylint: disable=broad-except
    logger.warning('No thumbnail for %s: %s', uri, e)
    return {'uri': uri, 'thumb': None}
  write_file(layout, layout.thumb_uri(uri), data, 'image/jpeg')
  return {'uri': uri, 'thumb': rel, 'width': w, 'height': h}


def _rel(uri: str, output: str) -> str:
  """uri relative to the output folder, or uri itself if outside it."""
  prefix = output.rstrip('/') + '/'
  return uri[len(prefix):] if uri.startswith(prefix) else uri


def _href(uri: str, output: str) -> str:
  """A link to uri from the report: relative and URL-escaped below the
  output folder (names may hold '%', '#', '?' or spaces), else uri."""
  rel = _rel(uri, output)
  if rel == uri:
    return uri
  return urllib.parse.quote(rel.encode('utf-8', 'surrogateescape'))


def _own_name(uri: str) -> str:
  """A file's own name without extension, as the user named it."""
  return posixpath.splitext(paths.basename(uri))[0]


def style_name(style: StyleRef) -> str:
  """A style by its images' own names ('waves', 'waves 70% + mosaic 30%'),
  not its escaped folder name."""
  if len(style.parts) == 1:
    return _own_name(style.parts[0][0])
  return ' + '.join(f'{_own_name(u)} {w:.0%}' for u, w in style.parts)


def style_caption(style: StyleRef, uri: str, weight: float) -> str:
  """A style thumbnail's caption: its image's own name; a blend's component
  by its own name, its weight and the blend it is part of (by the blend's
  folder name, as the user finds it on disk)."""
  if len(style.parts) == 1:
    return style_name(style)
  return f'{_own_name(uri)} ({weight:.0%} of {style.label})'


def render_html(samples: List[ManifestRow], failures: List[ManifestRow],
                thumbs: Dict[str, Dict], styles: Sequence[StyleRef],
                summary: Dict, output: str) -> str:
  """The report page (pure function of its inputs)."""
  e = html.escape

  def img(uri, alt):
    t = thumbs.get(uri) or {}
    if not t.get('thumb'):
      return f'<div class="missing">{e(alt)}</div>'
    return (f'<img src="{e(t["thumb"])}" alt="{e(alt)}" width="{t["width"]}"'
            f' height="{t["height"]}" loading="eager">')

  counts = summary.get('counts', {})
  names = {style.uri: style_name(style) for style in styles}
  parts = [
      '<!DOCTYPE html>', '<html lang="en">', '<head>',
      '<meta charset="utf-8">',
      f'<title>stylize report {e(str(summary.get("run_id", "")))}</title>',
      '<style>body{font-family:sans-serif;margin:1.5em;background:#fafafa}'
      'table{border-collapse:collapse}td,th{padding:4px 8px;border-bottom:'
      '1px solid #ddd;vertical-align:top;text-align:left}'
      '.styles,.grid{display:flex;flex-wrap:wrap;gap:12px}'
      'figure{margin:0;background:#fff;padding:6px;border:1px solid #ddd}'
      'figcaption{font-size:12px;max-width:420px;word-break:break-all}'
      '.pair{display:flex;gap:4px;align-items:center}'
      '.missing{width:100px;height:100px;background:#eee;font-size:11px}'
      '</style>', '</head>', '<body>',
      '<h1>stylize report</h1>',
      f'<p>Run <code>{e(str(summary.get("run_id", "")))}</code>, model '
      f'<code>{e(str(summary.get("model", "")))}</code>.</p>',
      '<table><tr><th>ok</th><th>failed</th><th>skipped</th><th>total</th>'
      '<th>files ignored</th></tr>',
      f'<tr><td>{counts.get("ok", 0)}</td><td>{counts.get("failed", 0)}</td>'
      f'<td>{counts.get("skipped", 0)}</td><td>{summary.get("total", 0)}</td>'
      f'<td>{summary.get("files_ignored", 0)}</td></tr></table>',
      '<h2>Styles</h2>', '<div class="styles">']
  for style in styles:
    for uri, weight in style.parts:
      caption = style_caption(style, uri, weight)
      parts.append(f'<figure>{img(uri, caption)}<figcaption>{e(caption)}'
                   '</figcaption></figure>')
  parts.append('</div>')
  classes = summary.get('classes') or {}
  if classes:
    parts.append(_class_table(classes))
  parts.append(f'<h2>Input &rarr; output ({len(samples)} shown)</h2>')
  for name, group in _by_class(samples, bool(classes)):
    if name is not None:
      parts.append(f'<h3 class="class">class {e(name)} ({len(group)} shown)'
                   '</h3>')
    parts.append('<div class="grid">')
    for row in group:
      out_link = e(_href(row.output, output))
      score = (f', {row.class_score:.2f}' if row.class_score is not None
               else '')
      # The photo's and the style's own names; the output's path (its
      # names escaped by the layout rule) on hover and in the link.
      caption = (f'{e(paths.basename(row.input))} &rarr; '
                 f'{e(names.get(row.style, _own_name(row.style or "")))}')
      parts.append(
          '<figure><div class="pair">'
          f'{img(row.input, "input")}&rarr;'
          f'<a href="{out_link}">{img(row.output, "output")}</a></div>'
          f'<figcaption title="{e(_rel(row.output, output))}">'
          f'{caption} ({row.status.value}{score})</figcaption></figure>')
    parts.append('</div>')
  parts.append(f'<h2>Failures ({counts.get("failed", 0)})</h2>')
  if failures:
    parts.append('<table><tr><th>input</th><th>style</th><th>reason</th></tr>')
    for row in failures:
      parts.append(f'<tr><td>{e(row.input)}</td><td>{e(row.style)}</td>'
                   f'<td>{e(row.error or "")}</td></tr>')
    parts.append('</table>')
  else:
    parts.append('<p>None.</p>')
  # After load, the page records how many thumbnails really decoded, so a
  # headless browser (or a person) can check nothing is broken.
  parts.append(
      '<script>window.addEventListener("load",function(){var i='
      'document.images,n=0;for(var k=0;k<i.length;k++){if(i[k].complete&&'
      'i[k].naturalWidth>0)n++;}document.body.setAttribute("data-images",'
      'i.length);document.body.setAttribute("data-loaded",n);});</script>')
  parts.append('</body></html>')
  return '\n'.join(parts)


def _class_table(classes: Dict[str, Dict[str, int]]) -> str:
  """Rows per class and status (routed runs; see transforms/routing.py)."""
  e = html.escape
  lines = ['<h2>Classes</h2>',
           '<table><tr><th>class</th><th>ok</th><th>failed</th>'
           '<th>skipped</th></tr>']
  for name, counts in sorted(classes.items()):
    lines.append(f'<tr><td>{e(name)}</td><td>{counts.get("ok", 0)}</td>'
                 f'<td>{counts.get("failed", 0)}</td>'
                 f'<td>{counts.get("skipped", 0)}</td></tr>')
  lines.append('</table>')
  return '\n'.join(lines)


def _by_class(rows: List[ManifestRow], grouped: bool):
  """[(class or None, rows)]: one group per class when the run was routed
  (unclassified rows, e.g. skipped as done earlier, last), else one."""
  if not grouped:
    return [(None, rows)]
  groups: Dict[str, List[ManifestRow]] = {}
  for row in rows:
    groups.setdefault(row.image_class or '(not classified this run)',
                      []).append(row)
  return sorted(groups.items(), key=lambda kv: (kv[0].startswith('('), kv[0]))


def _sample_key(row: ManifestRow) -> Tuple[str, str]:
  return (row.input, row.style)


def write_report(summary: Dict, samples: List[ManifestRow],
                 failures: List[ManifestRow], thumbs: List[Dict],
                 styles: Sequence[StyleRef], layout: OutputLayout,
                 wave: Optional[Wave] = None) -> str:
  if wave is not None:
    # The first pairs and failures of the whole run so far: the smallest of
    # this wave's and the earlier waves' (each already the smallest of its
    # own), and the thumbnails made for them (transforms/waves.py).
    earlier = wave.load('report')
    if earlier is not None:
      samples = sorted(list(earlier['samples']) + list(samples),
                       key=_sample_key)[:MAX_SAMPLES]
      failures = sorted(list(earlier['failures']) + list(failures),
                        key=_sample_key)[:MAX_FAILURES]
      thumbs = list(earlier['thumbs']) + list(thumbs)
    if not wave.last:
      wanted = set(_sample_uris(samples)) | {
          u for s in styles for u, _ in s.parts}
      wave.save('report', {
          'samples': list(samples), 'failures': list(failures),
          'thumbs': [t for t in thumbs if t['uri'] in wanted]})
  by_uri = {t['uri']: t for t in thumbs}
  page = render_html(sorted(samples, key=_sample_key),
                     sorted(failures, key=_sample_key), by_uri, styles,
                     summary, layout.output)
  uri = layout.report_uri()
  write_file(layout, uri, page.encode("utf-8", "replace"),
             'text/html')
  # The page is the run's last write (it waits for the summary, which waits
  # for the manifest, and for every thumbnail).
  remove_own_temporary(layout)
  return uri


def _write_picked(summary: Dict, picks: Dict, thumbs: List[Dict],
                  **kwargs) -> str:
  return write_report(summary, picks['samples'], picks['failures'], thumbs,
                      **kwargs)


def _sample_uris(rows: List[ManifestRow]) -> List[str]:
  return [u for r in rows for u in (r.input, r.output) if u]


def _shown(row: ManifestRow) -> bool:
  return row.status in (Status.OK, Status.SKIPPED) and bool(row.output)


class ReportPicksFn(beam.CombineFn):
  """Manifest rows -> {'samples': the first MAX_SAMPLES shown pairs,
  'failures': the first MAX_FAILURES failed ones} (by input, then style).

  One combiner for both (each Beam combiner is its own stages and side
  input); the lists are kept to their first n as they grow.
  """

  def __init__(self):
    # The limits when the pipeline is built (tests may lower them).
    self._limits = {'samples': MAX_SAMPLES, 'failures': MAX_FAILURES}

  def create_accumulator(self):
    return {'samples': [], 'failures': []}

  def _keep(self, acc, key, row):
    acc[key].append(row)
    if len(acc[key]) > 2 * self._limits[key]:
      acc[key] = sorted(acc[key], key=_sample_key)[:self._limits[key]]

  def add_input(self, acc, row: ManifestRow):
    if _shown(row):
      self._keep(acc, 'samples', row)
    elif row.status == Status.FAILED:
      self._keep(acc, 'failures', row)
    return acc

  def merge_accumulators(self, accs):
    accs = list(accs)
    return {key: sorted([r for a in accs for r in a[key]],
                        key=_sample_key)[:n]
            for key, n in self._limits.items()}

  def extract_output(self, acc):
    return self.merge_accumulators([acc])


def _thumb_weight(uri: str, limits: Tuple[int, int]) -> int:
  """Bytes a thumbnail holds while it is made: the file (as listed, within
  --max_input_bytes) and its decoded pixels (about ten times the file, as
  DecodeImages.weight reckons, within --max_input_pixels)."""
  max_bytes, max_pixels = limits
  entry = stat(uri)  # Literally: names may hold glob characters.
  # Unreadable: make_thumb says why.
  size = max_bytes if entry.error else min(entry.size, max_bytes)
  return size + min(3 * max_pixels, 10 * size)


def _make_thumbs(picks: Dict, style_uris: Sequence[str],
                 layout: OutputLayout, limits: Tuple[int, int],
                 threads: Optional[int]) -> List[Dict[str, object]]:
  """Every image the report shows, once, made into a thumbnail. On one
  worker with --io_threads threads (a few hundred small images: Pillow's
  decode and resize let go of the GIL), since a stage of its own per
  thumbnail costs more in Beam than the thumbnail; the bytes held at once
  stay within the I/O stages' budget (overlap.ByteBudget: a few photos at a
  time, one huge scan alone)."""
  uris = list(dict.fromkeys(_sample_uris(picks['samples']) +
                            list(style_uris)))
  budget = overlap.ByteBudget()

  def one(uri: str) -> Dict[str, object]:
    with budget.reserve(_thumb_weight(uri, limits)):
      return make_thumb(uri, layout, limits)

  with ThreadPoolExecutor(threads or overlap.default_threads(),
                          thread_name_prefix='stylize-thumb') as pool:
    return list(pool.map(one, uris))


class WriteReport(beam.PTransform):
  """(manifest rows, summary dict) -> {output}/report.html and thumbnails.

  Shows the first MAX_SAMPLES (by input path) done pairs and up to
  MAX_FAILURES failures; thumbnails are made in parallel threads on one worker.
  """

  def __init__(self, layout: OutputLayout, styles: Sequence[StyleRef],
               wave: Optional[Wave] = None,
               limits: Tuple[int, int] = (DEFAULT_MAX_INPUT_BYTES,
                                          DEFAULT_MAX_PIXELS),
               threads: Optional[int] = None):
    """limits: (--max_input_bytes, --max_input_pixels) for the files read
    for thumbnails; threads: thumbnails made at once (--io_threads;
    None: the I/O stages' default, overlap.default_threads)."""
    super().__init__()
    self._limits = tuple(limits)
    self._threads = threads
    self._layout = layout
    self._styles = list(styles)
    self._wave = wave

  def expand(self, inputs):
    rows, summary = inputs
    picks = rows | 'FirstPairs' >> beam.CombineGlobally(ReportPicksFn())
    style_uris = [u for s in self._styles for u, _ in s.parts]
    thumbs = picks | 'Thumbs' >> beam.Map(
        _make_thumbs, style_uris, self._layout, self._limits, self._threads)
    return summary | 'WriteHtml' >> beam.Map(
        _write_picked, picks=beam.pvalue.AsSingleton(picks),
        thumbs=beam.pvalue.AsSingleton(thumbs),
        styles=self._styles, layout=self._layout, wave=self._wave)
