"""A local S3 server for the tests (moto's S3 behind werkzeug, on a free port, in a thread of
the test process) that counts what its clients asked for, server side: requests by kind and
the bytes of every object body it sent."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

# Fake credentials and a region: moto takes any, and boto3, s3fs and Snakemake's S3 plugin
# find them in the environment as they would real ones.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class Request:
    method: str
    bucket: str
    key: str
    query: dict
    range: str | None
    agent: str = ""  # the client's User-Agent
    body_bytes: int = 0  # of an object's body sent back (GET)

    @property
    def kind(self) -> str:
        if self.method == "GET" and not self.key:
            return "LIST"
        return self.method


# The errors a test can have the server answer with instead, as S3 words them.
ERRORS = {
    "SlowDown": "503 Slow Down",
    "AccessDenied": "403 Forbidden",
    "InternalError": "500 Internal Server Error",
}


@dataclass
class S3Server:
    """`with S3Server() as s3:` a server at `s3.url`; `s3.requests` what it was asked, in order.
    `s3.fail_next(n, "SlowDown")`: the next n requests are answered with that error instead."""

    requests: list[Request] = field(default_factory=list)
    _failing: list[str] = field(default_factory=list)

    def fail_next(self, count: int, code: str) -> None:
        with self._lock:
            self._failing[:] = [code] * count

    def failures_left(self) -> int:
        with self._lock:
            return len(self._failing)

    def __enter__(self) -> S3Server:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
        app = DomainDispatcherApplication(create_backend_app)
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._counting(app), threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._thread.join()

    def _counting(self, app):
        def serve(environ, start_response):
            bucket, _, key = unquote(environ["PATH_INFO"]).lstrip("/").partition("/")
            query = parse_qs(environ.get("QUERY_STRING", ""))
            request = Request(environ["REQUEST_METHOD"], bucket, key, query, environ.get("HTTP_RANGE"),
                              environ.get("HTTP_USER_AGENT", ""))  # fmt: skip
            with self._lock:
                self.requests.append(request)
                code = self._failing.pop() if self._failing else None
            if code:
                body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code></Error>".encode()
                body = b"" if request.method == "HEAD" else body
                start_response(
                    ERRORS[code], [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))]
                )
                yield body
                return
            for chunk in app(environ, start_response):
                if request.method == "GET" and request.key:
                    request.body_bytes += len(chunk)
                yield chunk

        return serve

    def env(self) -> dict[str, str]:
        """The environment a client needs to reach this server (credentials, endpoint)."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.url}

    def counts(self, since: int = 0, agent: str = "") -> Counter:
        """Requests by kind (GET, PUT, HEAD, LIST, POST, DELETE) from request number `since`, of
        the clients whose User-Agent holds `agent` (boto3's "Boto3/": Snakemake's S3 plugin;
        "aiobotocore/": s3fs, what this workflow's own code asks)."""
        with self._lock:
            return Counter(r.kind for r in self.requests[since:] if agent in r.agent)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
