"""A Hugging Face hub and a release-asset host on loopback, for fetching without internet."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote


class FakeHub:
    """Serves what huggingface_hub asks of the Hub: a file at `/{repo}/resolve/{revision}/{file}`
    (HEAD and GET) and a repo's commit at a branch, tag or commit at
    `/api/models/{repo}/revision/{revision}` (`HfApi.model_info`), and plain files under
    `/files/`. `repos` maps repo ids to {file name: path}, their first commit, on main; `push`
    adds commits. `refused` repos answer 401 to a file request, as gated ones do for a missing
    token (their commits stay readable, as on the Hub). `requests` records every path asked for."""

    def __init__(self, repos: dict[str, dict[str, Path]], files: dict[str, Path], refused=()):
        self.files, self.refused = files, set(refused)
        self.commits: dict[str, dict[str, dict[str, Path]]] = {}  # repo -> commit -> its files
        self.refs: dict[str, dict[str, str]] = {}  # repo -> branch or tag -> commit
        for repo in [*repos, *self.refused.difference(repos)]:
            self.push(repo, repos.get(repo, {}))
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
                parts = [unquote(part) for part in self.path.split("?")[0].strip("/").split("/")]
                if parts[0] == "files" and len(parts) == 2 and parts[1] in hub.files:
                    self.send(200, Path(hub.files[parts[1]]).read_bytes(), body)
                elif (
                    parts[0] == "api" and len(parts) == 6 and parts[1] == "models" and parts[4] == "revision"
                ):
                    self.info("/".join(parts[2:4]), parts[5], body)
                elif len(parts) >= 5 and parts[2] == "resolve":
                    self.file("/".join(parts[:2]), parts[3], "/".join(parts[4:]), body)
                else:
                    self.refuse(404, "EntryNotFound", "Entry not found")

            def info(self, repo: str, revision: str, body: bool):
                commit = hub.commit_of(repo, revision)
                if commit is None:
                    self.refuse_revision(repo)
                    return
                siblings = [{"rfilename": name} for name in hub.commits[repo][commit]]
                info = {"id": repo, "modelId": repo, "sha": commit, "siblings": siblings}
                self.send(200, json.dumps(info).encode(), body, {"Content-Type": "application/json"})

            def file(self, repo: str, revision: str, name: str, body: bool):
                commit = hub.commit_of(repo, revision)
                if commit is None:
                    self.refuse_revision(repo)
                elif repo in hub.refused:
                    self.refuse(401, "GatedRepo", "Access restricted")
                elif name not in hub.commits[repo][commit]:
                    self.refuse(404, "EntryNotFound", "Entry not found", commit)
                else:
                    data = Path(hub.commits[repo][commit][name]).read_bytes()
                    etag = '"' + hashlib.sha256(data).hexdigest() + '"'
                    self.send(200, data, body, {"ETag": etag, "X-Repo-Commit": commit})

            def refuse_revision(self, repo: str):
                if repo in hub.commits:
                    self.refuse(404, "RevisionNotFound", "Invalid rev id")
                else:
                    self.refuse(404, "RepoNotFound", "Repository not found")

            def refuse(self, status: int, code: str, message: str, commit: str | None = None):
                headers = {"X-Error-Code": code, "X-Error-Message": message}
                self.send(status, b"", False, headers | ({"X-Repo-Commit": commit} if commit else {}))

            def send(self, status: int, data: bytes, body: bool, headers: dict[str, str] | None = None):
                self.send_response(status)
                for key, value in {"Content-Length": str(len(data)), **(headers or {})}.items():
                    self.send_header(key, value)
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # A short poll: `shutdown` waits for one, half a second by default.
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def push(self, repo: str, files: dict[str, Path], ref: str = "main") -> str:
        """A new commit of `repo` holding `files`, with the branch or tag `ref` moved to it: its id."""
        commits = self.commits.setdefault(repo, {})
        commit = hashlib.sha1(f"{repo} {len(commits)}".encode()).hexdigest()
        commits[commit] = dict(files)
        self.refs.setdefault(repo, {})[ref] = commit
        return commit

    def commit_of(self, repo: str, revision: str) -> str | None:
        """The commit a branch, tag or commit id names in `repo`, None if none."""
        if revision in self.commits.get(repo, {}):
            return revision
        return self.refs.get(repo, {}).get(revision)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
