"""A local HTTP server (127.0.0.1 only) for image tests: files from a folder, plus routes that
misbehave the ways real servers do.

    with ImageServer(folder) as server:
        server.url("cat.jpg")           # a file
        server.url("redirect/3/cat.jpg")  # three redirects, then the file
        server.url("loop")              # redirects to itself for ever
        server.url("to-ftp")            # redirects to ftp://
        server.url("drip")              # a large body, one byte every DRIP_INTERVAL_S
        server.url("big/5000")          # 5000 bytes, with a Content-Length
        server.url("big-unsized/5000")  # 5000 bytes, no Content-Length (ends when it closes)
"""

from __future__ import annotations

import functools
import http.server
import socket
import threading
import time
from pathlib import Path

from typing_extensions import Self

DRIP_INTERVAL_S = 0.05


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # quiet test output
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        parts = self.path.strip("/").split("/")
        route = parts[0]
        if route == "redirect" and len(parts) >= 3:
            hops = int(parts[1])
            rest = "/".join(parts[2:])
            self._redirect(f"/redirect/{hops - 1}/{rest}" if hops > 1 else f"/{rest}")
        elif route == "loop":
            self._redirect("/loop")
        elif route == "to-ftp":
            self._redirect(f"ftp://127.0.0.1:{self.server.server_address[1]}/cat.jpg")
        elif route == "to-file":
            self._redirect("file:///etc/passwd")
        elif route == "drip":
            self._drip()
        elif route in ("big", "big-unsized"):
            self._big(int(parts[1]), sized=route == "big")
        else:
            super().do_GET()

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _drip(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(100000):
                self.wfile.write(b"\0")
                self.wfile.flush()
                time.sleep(DRIP_INTERVAL_S)
        except OSError:
            pass  # the client gave up, as it should

    def _big(self, size: int, *, sized: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        if sized:
            self.send_header("Content-Length", str(size))
        else:
            self.close_connection = True
        self.end_headers()
        try:
            self.wfile.write(b"\0" * size)
        except OSError:
            pass


class ImageServer:
    """``http.server`` on 127.0.0.1 in a thread, serving ``folder`` and the routes above."""

    def __init__(self, folder: Path) -> None:
        handler = functools.partial(_Handler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.root = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return f"{self.root}/{path}"

    def __enter__(self) -> Self:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (a port just freed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/cat.jpg"
