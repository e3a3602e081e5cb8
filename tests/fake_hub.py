"""A Hugging Face hub and a release-asset host on loopback, for fetching without internet."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FakeHub:
    """Serves `{repo}/resolve/{revision}/{file}` the way huggingface_hub expects, and plain
    files under `/files/`. `repos` maps repo ids to {file name: path}; `refused` repos answer
    401 as gated ones do for a missing token. `requests` records every path asked for."""

    def __init__(self, repos: dict[str, dict[str, Path]], files: dict[str, Path], refused=()):
        self.repos, self.files, self.refused = repos, files, set(refused)
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.respond(body=False)

            def do_GET(self):
                self.respond(body=True)

            def respond(self, body: bool):
                hub.requests.append(self.path)
                parts = self.path.split("?")[0].strip("/").split("/")
                status, path = 404, None
                if parts[0] == "files" and len(parts) == 2:
                    path = hub.files.get(parts[1])
                elif len(parts) >= 5 and parts[2] == "resolve":
                    repo = "/".join(parts[:2])
                    if repo in hub.refused:
                        status = 401
                    else:
                        path = hub.repos.get(repo, {}).get("/".join(parts[4:]))
                if path is None:
                    self.send_response(status)
                    gated = status == 401
                    self.send_header("X-Error-Code", "GatedRepo" if gated else "EntryNotFound")
                    self.send_header("X-Error-Message", "Access restricted" if gated else "Entry not found")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = Path(path).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
                self.send_header("X-Repo-Commit", "0" * 40)
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
