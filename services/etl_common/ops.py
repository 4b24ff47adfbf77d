"""A worker's ops endpoint: /metrics, /healthz (loop heartbeat fresh) and /readyz (Redis reachable)."""

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


class Heartbeat:
    """Beaten by the main loop at every turn; stale means the loop is stuck."""

    def __init__(self, stale_s: float) -> None:
        self.stale_s = stale_s
        self._at = time.monotonic()
        # A condition the worker waits out (e.g. a full disk): /readyz answers 503 with it as the reason.
        self.problem: str | None = None

    def beat(self) -> None:
        """Record that the loop is alive now."""
        self._at = time.monotonic()

    def fresh(self) -> bool:
        """True when the last beat is younger than ``stale_s`` seconds."""
        return time.monotonic() - self._at < self.stale_s


def serve(host: str, port: int, heartbeat: Heartbeat, ready: Callable[[], bool]) -> ThreadingHTTPServer:
    """Start the endpoint on a daemon thread and return the server (port 0 picks a free one)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok = heartbeat.fresh()
                self._send(200 if ok else 503, b'{"status":"ok"}' if ok else b'{"status":"stale"}')
            elif path == "/readyz":
                problem = heartbeat.problem
                if problem:
                    self._send(503, json.dumps({"status": "not ready", "reason": problem}).encode())
                    return
                try:
                    ok = ready()
                except Exception:
                    ok = False
                self._send(200 if ok else 503, b'{"status":"ready"}' if ok else b'{"status":"not ready"}')
            else:
                self._send(404, b'{"detail":"Not Found"}')

        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # scrapes are not worth a log line
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="ops", daemon=True).start()
    return server
