"""OpenVINO, imported the one way the job imports it: without telemetry.

openvino.convert_model (OVC) sends usage statistics to Google Analytics on
every conversion, writes a client id and counters under ~/intel/, and forks
a process to send them, unless the user has opted out with OpenVINO's
`opt_in_out --opt_out` (or CI=true is set). A batch job run over someone's
photo archive must not send anything anywhere, and must not write into
their home folder. OVC falls back to its own no-op stub
(openvino.tools.ovc.telemetry_stub) when the openvino_telemetry package
cannot be imported, so that import is made to fail in this process (a None
entry in sys.modules: Python's documented way to make an import raise
ImportError) before OpenVINO is first imported. The user's own opt-in file
is neither read nor changed, and other programs keep their setting.
"""

import logging
import sys

TELEMETRY_MODULE = 'openvino_telemetry'


def disable_telemetry() -> bool:
  """Makes openvino_telemetry unimportable in this process, before OpenVINO
  is imported (OVC binds it when openvino is first imported). False when it
  is too late: OpenVINO was imported with it already."""
  if TELEMETRY_MODULE not in sys.modules:
    sys.modules[TELEMETRY_MODULE] = None
  return sys.modules[TELEMETRY_MODULE] is None


def import_openvino():
  """The openvino module, with OVC's telemetry switched off here."""
  if not disable_telemetry():
    # A program that imported openvino itself before calling the job.
    logging.getLogger(__name__).warning(
        'OpenVINO was imported before stylize could switch its usage '
        'telemetry off; opt out for good with `opt_in_out --opt_out` '
        '(OpenVINO\'s command), or import stylize first.')
  import openvino  # pylint: disable=import-outside-toplevel
  return openvino
