"""A pass-through HTTP proxy in front of fake-gcs-server, for the tests.

fake-gcs-server answers a JSON batch request (POST /batch/storage/v1) only
when every part carries a Content-ID header; real GCS does not require it,
and the google-cloud-storage client does not send one, so the emulator
answers an empty batch and Beam's FileSystems.rename / delete on gs:// (used
by Beam's file sinks to finalize) fail against it. This proxy adds a
Content-ID to each part of batch requests and passes everything else through
unchanged, so the tests run Beam's own gs:// code paths against the real
emulator.
"""

import http.client
import http.server
import re
import threading
import urllib.parse

_HOP = frozenset({'connection', 'keep-alive', 'transfer-encoding', 'te',
                  'trailer', 'upgrade', 'proxy-authorization',
                  'proxy-authenticate', 'host', 'content-length'})


def add_content_ids(body: bytes) -> bytes:
  """Each 'Content-Type: application/http' part header gets a Content-ID."""
  count = [0]

  def add(match):
    count[0] += 1
    return match.group(0) + f'Content-ID: <item{count[0]}>'.encode() + (
        match.group(1))

  return re.sub(rb'Content-Type: application/http(\r?\n)', add, body)


class _Handler(http.server.BaseHTTPRequestHandler):
  protocol_version = 'HTTP/1.1'
  upstream = ('127.0.0.1', 0)

  def log_message(self, *args):  # Quiet.
    pass

  def _forward(self):
    length = int(self.headers.get('Content-Length') or 0)
    body = self.rfile.read(length) if length else b''
    if self.command == 'POST' and self.path.startswith('/batch/'):
      body = add_content_ids(body)
    headers = {k: v for k, v in self.headers.items()
               if k.lower() not in _HOP}
    conn = http.client.HTTPConnection(*self.upstream, timeout=120)
    try:
      conn.request(self.command, self.path, body=body or None,
                   headers=headers)
      resp = conn.getresponse()
      data = resp.read()
      self.send_response(resp.status, resp.reason)
      for k, v in resp.getheaders():
        if k.lower() in _HOP:
          continue
        if k.lower() == 'location':
          # Resumable uploads continue at the proxy too.
          v = v.replace(f'{self.upstream[0]}:{self.upstream[1]}',
                        f'{self.server.server_address[0]}:'
                        f'{self.server.server_address[1]}')
        self.send_header(k, v)
      self.send_header('Content-Length', str(len(data)))
      self.end_headers()
      if self.command != 'HEAD':
        self.wfile.write(data)
    finally:
      conn.close()

  do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward


def start(upstream_url: str):
  """Starts the proxy on a free loopback port; returns (server, url)."""
  parsed = urllib.parse.urlparse(upstream_url)
  handler = type('Handler', (_Handler,),
                 {'upstream': (parsed.hostname, parsed.port)})
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  server.daemon_threads = True
  threading.Thread(target=server.serve_forever, daemon=True).start()
  host, port = server.server_address
  return server, f'http://{host}:{port}'
