"""A tiny web app for ``zdd deploy --provider local`` (standard library only).

It listens on 127.0.0.1:$PORT, answers ``GET /`` with its release
(``ZDD_VERSION``) and ``GET /health`` with 200, and on SIGTERM stops accepting,
finishes the requests in flight and exits 0: what zdd needs from an app to
deploy it without a failed request.
"""

from __future__ import annotations

import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/health":
            body = b"ok\n"
        elif self.path == "/":
            greeting = os.environ.get("GREETING", "hello")
            body = f"{greeting} from {os.environ.get('ZDD_VERSION', '?')}\n".encode()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: zdd keeps each machine's output in its state directory


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    server.daemon_threads = False  # finish what is in flight before exiting
    server.block_on_close = True

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
