"""Launch checks of --route_model and --route: the router folder and routes.

The pure rules (--route needs --route_model, ...) are in
beam_jobs/validation.py; these read router.json and, for local runs, load
the router once.
"""

import logging
from typing import Dict, List, Optional

import numpy as np

from beam_jobs.errors import ConfigError
from beam_jobs.settings import JobSettings
from transforms import paths

logger = logging.getLogger(__name__)


def validate_routing(o: JobSettings) -> Optional[dict]:
  """--route_model and --route -> {route_model, router_id, fingerprint,
  routes, styles}; None without --route_model. Reads router.json, and the
  router's files for its content fingerprint (and --route_model_sha256);
  the model is not loaded.

  Raises:
    ConfigError: a folder that is not a router, a malformed --route, a
      class the router does not know.
  """
  from transforms.models.router import RouterError, read_router_info
  from transforms.routing import parse_route, route_styles
  if not o.route_model:
    return None
  folder = paths.absolute(paths.join(o.route_model))
  try:
    info = read_router_info(folder)
  except RouterError as e:
    raise ConfigError(f'--route_model: {e}') from None
  per_class: Dict[str, List[str]] = {}
  # ';' separates routes in one value: Flex Template parameters take one.
  for arg in [a.strip() for r in o.route for a in r.split(';') if a.strip()]:
    try:
      name, style = parse_route(arg)
    except ValueError as e:
      raise ConfigError(f'--route: {e}') from None
    if name not in info.labels:
      raise ConfigError(
          f'--route {arg!r}: the router knows no class {name!r}; its classes '
          f'are {list(info.labels)}.')
    per_class.setdefault(name, []).append(style)
  try:
    styles, routes = route_styles(per_class)
  except ValueError as e:
    raise ConfigError(f'--route: {e}') from None
  unrouted = [c for c in info.labels if c not in routes]
  if unrouted:
    logger.info('Images of class(es) %s have no --route: they will be '
                'skipped rows.', unrouted)
  from transforms.models.router import router_files
  return {'route_model': folder, 'router_id': info.router_id,
          'fingerprint': router_fingerprint(router_files(folder, info),
                                            o.route_model_sha256),
          'routes': routes, 'styles': styles}


def router_fingerprint(files: str, expected_sha256: Optional[str]) -> str:
  """The router's content fingerprint (transforms/identity.py), once per
  run, after checking --route_model_sha256 (the SHA-256 of its files'
  listing: router.json and its SavedModel folder, as for --model_sha256).
  files: router.router_files().

  Raises:
    ConfigError: the digest differs, or the files cannot be read.
  """
  from transforms.identity import files_fingerprint
  from transforms.models.base import ModelLoadError
  from transforms.models.checks import digest
  from transforms.models.cache import check_digest
  folder = paths.dirname(files.split(',')[0])
  try:
    fingerprint = files_fingerprint(files)
    if expected_sha256:
      # Local files: the fingerprint is that SHA-256 (read once); gs://:
      # the listed checksums, so the content is streamed once more here.
      actual = (fingerprint[len('sha256:'):] if fingerprint.startswith(
          'sha256:') else digest(files))
      check_digest(folder, actual, expected_sha256, '--route_model_sha256')
  except ModelLoadError as e:
    raise ConfigError(f'--route_model: {e}') from None
  except OSError as e:
    raise ConfigError(f'--route_model {folder!r}: cannot read its files: '
                      f'{e}') from None
  return fingerprint


def check_router(folder: str, tf_threads: int,
                 fingerprint: Optional[str] = None) -> None:
  """Loads the router once and classifies a test image, so a broken one
  fails now rather than on every worker. fingerprint: router_fingerprint's
  (the key under which an in-process run's workers find this load)."""
  from transforms.models.base import ModelLoadError
  from transforms.models.router import load_router
  try:
    load_router(folder, tf_threads, fingerprint).classify(
        [np.full((64, 64, 3), 128, np.uint8)])
  except ModelLoadError as e:
    raise ConfigError(f'--route_model: {e}') from None
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f'--route_model {folder!r} loaded but failed on a test '
                      f'image: {type(e).__name__}: {e}') from None
