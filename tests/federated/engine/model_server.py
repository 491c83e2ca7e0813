"""A stand-in for the site's base-model and progress endpoints, on loopback (``http.server``).

``GET <anything>``: the model bytes, with the bearer token checked (401 JSON error otherwise),
``Range: bytes=N-`` answered with 206 (or ignored on request), an optional break after some
bytes. ``POST <anything>``: a JSON progress report, recorded with its Authorization header.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "atj_job-token-for-tests"
BASE_MODEL_PATH = "/api/v1/federated/jobs/7/base-model"


@dataclass
class ModelServer:
    """What the server serves and how; ``requests`` logs (method, path, headers) of each GET."""

    body: bytes = b""
    token: str = TOKEN
    break_after: int | None = None  # close the first full response after this many bytes
    ignore_range: bool = False
    delay: float = 0.0  # seconds per 256 KiB sent
    requests: list[dict[str, str]] = field(default_factory=list)
    posts: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    url: str = ""  # the base model's URL
    site: str = ""  # http://127.0.0.1:PORT


def _handler(state: ModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # http.server's name
            state.requests.append({"path": self.path, **dict(self.headers.items())})
            if self.headers.get("Authorization") != f"Bearer {state.token}":
                body = json.dumps(
                    {"code": "job_token_invalid", "message": "Invalid job token.", "details": {}}
                ).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            data, start = state.body, 0
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if match and not state.ignore_range:
                start = int(match.group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(data) - start))
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.end_headers()
            limit = len(data)
            if state.break_after is not None:
                limit, state.break_after = min(len(data), start + state.break_after), None
            for offset in range(start, limit, 256 * 1024):
                self.wfile.write(data[offset : min(offset + 256 * 1024, limit)])
                if state.delay:
                    time.sleep(state.delay)
            if limit < len(data):
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)  # the connection drops mid-file

        def do_POST(self) -> None:  # http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.posts.append((self.headers.get("Authorization", ""), json.loads(body)))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def serve_model(body: bytes) -> Iterator[ModelServer]:
    """Serve ``body`` as the job's base model until the block ends."""
    state = ModelServer(body=body)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.site = f"http://127.0.0.1:{httpd.server_port}"
    state.url = state.site + BASE_MODEL_PATH
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
