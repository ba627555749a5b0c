"""A local stand-in for the weights' download server: ``http.server`` on 127.0.0.1, an ephemeral port.

    with WeightsServer(folder) as server:          # serves the files of `folder`
        server.url("x-1234abcd.pth")               # http://127.0.0.1:<port>/x-1234abcd.pth
        server.requests                             # paths asked for, in order (a GET each)
        server.truncate = {"x-1234abcd.pth"}        # announce the full size, send half, close
        server.no_length = {"x-1234abcd.pth"}       # send no Content-Length (with truncate: half, then close)
        server.status = {"x-1234abcd.pth": 500}     # answer with this HTTP error instead
        server.stall = {"x-1234abcd.pth": "body"}   # "headers": send nothing; "body": half, then nothing

``hashed_copy`` names a checkpoint as torch.hub's hash convention wants (``<stem>-<sha256[:8]>.pth``);
``point_weights_at`` points published weights at a served file (mirror setting + the entry's URL).
Shared by the tests of published weights, predict and detection's ``MODEL.WEIGHTS``.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Set

PUBLIC_BASE = "https://download.openmmlab.com/mmclassification/v0/shufflenet_v1/"


class WeightsServer:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.requests: List[str] = []
        self.truncate: Set[str] = set()
        self.no_length: Set[str] = set()
        self.status: Dict[str, int] = {}
        self.stall: Dict[str, str] = {}
        self.released = threading.Event()  # ends the stalls (set when the server stops)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                server.requests.append(name)
                path = server.root / name
                if name in server.status:
                    self.send_error(server.status[name], "injected by the test")
                    return
                if "/" in name or not path.is_file():
                    self.send_error(404, "not found")
                    return
                data = path.read_bytes()
                if server.stall.get(name) == "headers":
                    server.released.wait(60)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if name not in server.no_length:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if server.stall.get(name) == "body":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    server.released.wait(60)
                    self.close_connection = True
                    return
                if name in server.truncate:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def __enter__(self) -> WeightsServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def hashed_copy(src: Path, folder: Path, stem: str) -> Path:
    """``src`` copied into ``folder`` as ``<stem>-<first 8 hex digits of its sha256>.pth``."""
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / f"{stem}-{sha256(src)[:8]}.pth"
    shutil.copyfile(src, dst)
    return dst


def point_weights_at(monkeypatch, server: WeightsServer, entry, file_name: str) -> str:
    """Make the published weights ``entry`` download ``file_name`` from ``server``: the mirror setting points
    at the server and the entry's URL gets that file name (the public base kept). Returns the entry's URL."""
    monkeypatch.setenv("SHUFFLENET_WEIGHTS_MIRROR", server.base)
    url = PUBLIC_BASE + file_name
    monkeypatch.setattr(entry.value, "url", url)
    return url
