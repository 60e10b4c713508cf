"""The collector's HTTP/1.1 transport: one asyncio event loop, no thread per connection.

Why not http.server: with a thread per connection, thousands of agents keeping
connections alive cost a thread each, and the threads fight over the GIL; the
measured ingest rate stalled at one core's worth of context switches. Here one
loop serves every connection; the only work moved to a thread is rendering
/metrics and the status pages, so a scrape never stops ingest.

Deliberately small: requests with a Content-Length body or none (chunked
uploads get 411), keep-alive, `Expect: 100-continue`, HEAD, a timeout on every
read, a cap on header size and on open connections, TLS through `ssl`. What a
request means is decided by `Api.handle`; this module only moves bytes.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from email.utils import formatdate
from http import HTTPStatus
from typing import Optional, Set, Tuple

from collector import __version__
from collector.exposition import blocks
from collector.selfmetrics import REASON_BODY_TOO_LARGE, REASON_LENGTH_REQUIRED
from collector.server import Api, Request, Response, json_response

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024
SERVER = f"vdiwatch-collector/{__version__}".encode()
_SLOW_PATHS = ("/metrics", "/", "/api/v1/hosts")  # rendered in a worker thread


class HttpServer:
    def __init__(self, api: Api, host: str, port: int, *, request_timeout: float = 10.0,
                 tls: Optional[ssl.SSLContext] = None, max_connections: int = 4096):
        self.api = api
        self.host, self.port = host, port
        self.request_timeout = request_timeout
        self.tls = tls
        self.max_connections = max_connections
        self._server: Optional[asyncio.AbstractServer] = None
        self._connections: Set[asyncio.Task] = set()
        self._busy: Set[asyncio.Task] = set()

    async def start(self) -> Tuple[str, int]:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, ssl=self.tls, backlog=1024, limit=MAX_HEADER_BYTES,
            ssl_handshake_timeout=self.request_timeout if self.tls else None)
        address = self._server.sockets[0].getsockname()
        return address[0], address[1]

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let requests in flight finish (up to `grace` seconds), close idle connections."""
        if self._server is None:
            return
        self._server.close()
        if self._busy:
            await asyncio.wait(set(self._busy), timeout=grace)
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(set(self._connections), timeout=1.0)
        try:
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        except asyncio.TimeoutError:
            pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._connections) >= self.max_connections:
            writer.close()
            return
        self._connections.add(task)
        try:
            while await self._one_request(reader, writer):
                pass
        except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # slow, idle or vanished clients: nothing to answer
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - the last line of defence for one connection
            log.exception("unexpected error on a connection")
        finally:
            self._connections.discard(task)
            writer.close()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection should close."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.request_timeout)
        except asyncio.LimitOverrunError:
            await self._send(writer, "GET", json_response(431, {"error": "request headers too large"}), False)
            return False
        except asyncio.IncompleteReadError:
            return False
        parsed = _parse_head(head)
        if parsed is None:
            await self._send(writer, "GET", json_response(400, {"error": "malformed request"}), False)
            return False
        method, target, version, headers = parsed
        keep_alive = _keep_alive(version, headers)
        body = b""
        if "transfer-encoding" in headers:
            self.api.metrics.rejected.labels(REASON_LENGTH_REQUIRED).inc()
            await self._send(writer, method, json_response(
                411, {"error": "send the body with a Content-Length, not chunked", "reason": REASON_LENGTH_REQUIRED}),
                False)
            return False
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                await self._send(writer, method, json_response(400, {"error": "bad Content-Length"}), False)
                return False
            n = int(length)
            if n > self.api.edge.max_body_bytes:
                self.api.metrics.rejected.labels(REASON_BODY_TOO_LARGE).inc()
                await self._send(writer, method, json_response(413, {
                    "error": f"the body must be at most {self.api.edge.max_body_bytes} bytes",
                    "reason": REASON_BODY_TOO_LARGE,
                    "problems": [{"field": "", "reason": REASON_BODY_TOO_LARGE, "message": "request body too large"}],
                }), False)
                return False  # the unread body makes the connection unusable
            if headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = await asyncio.wait_for(reader.readexactly(n), self.request_timeout)
        elif method == "POST":
            self.api.metrics.rejected.labels(REASON_LENGTH_REQUIRED).inc()
            await self._send(writer, method, json_response(
                411, {"error": "Content-Length is required", "reason": REASON_LENGTH_REQUIRED}), False)
            return False
        request = Request(method, target, headers, body)
        task = asyncio.current_task()
        self._busy.add(task)
        try:
            if method in ("GET", "HEAD") and target.split("?", 1)[0] in _SLOW_PATHS:
                response = await asyncio.get_running_loop().run_in_executor(None, self._handle, request)
            else:
                response = self._handle(request)
            await self._send(writer, method, response, keep_alive)
        finally:
            self._busy.discard(task)
        return keep_alive

    def _handle(self, request: Request) -> Response:
        try:
            return self.api.handle(request)
        except Exception:  # noqa: BLE001 - the one place where an unexpected error is reported
            log.exception("internal error while serving %s %s", request.method, request.path)
            return json_response(500, {"error": "internal error; see the collector's log"})

    async def _send(self, writer: asyncio.StreamWriter, method: str, response: Response, keep_alive: bool) -> None:
        parts = response.body if isinstance(response.body, list) else [response.body]
        try:
            phrase = HTTPStatus(response.status).phrase
        except ValueError:
            phrase = ""
        lines = [f"HTTP/1.1 {response.status} {phrase}".encode(), b"Server: " + SERVER,
                 b"Date: " + formatdate(usegmt=True).encode(),
                 b"Content-Type: " + response.content_type.encode(),
                 b"Content-Length: " + str(sum(map(len, parts))).encode(),
                 b"Connection: keep-alive" if keep_alive else b"Connection: close"]
        lines += [f"{k}: {v}".encode("latin-1") for k, v in response.headers.items()]
        head = b"\r\n".join(lines) + b"\r\n\r\n"
        if method == "HEAD":
            writer.write(head)
        elif len(parts) == 1:
            writer.write(head + parts[0])
        else:
            writer.write(head)
            for part in blocks(parts):
                writer.write(part)
                await asyncio.wait_for(writer.drain(), self.request_timeout * 6)
        await asyncio.wait_for(writer.drain(), self.request_timeout * 6)


def _parse_head(head: bytes):
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        return None
    lines = text.split("\r\n")
    request_line = lines[0].split(" ")
    if len(request_line) != 3 or not request_line[2].startswith("HTTP/1."):
        return None
    method, target, version = request_line
    if not target.startswith("/"):
        return None
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            return None
        headers[name.lower()] = value.strip()
    return method, target, version, headers


def _keep_alive(version: str, headers) -> bool:
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.0":
        return connection == "keep-alive"
    return connection != "close"
