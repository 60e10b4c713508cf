"""The collector's HTTP/1.1 transport: one asyncio event loop, no thread per connection.

Why not http.server: with a thread per connection, thousands of agents keeping
connections alive cost a thread each, and the threads fight over the GIL; the
measured ingest rate stalled at one core's worth of context switches. Here one
loop serves every connection; work moved to threads is rendering /metrics and
the status pages (so a scrape never stops ingest) and checking a basic-auth
password (PBKDF2, on a pool of its own with a cap on pending checks).

Deliberately small: requests with a Content-Length body or none (chunked
uploads get 411), keep-alive, `Expect: 100-continue`, HEAD, TLS through `ssl`.
What a request means is decided by `Api.route`, and every refusal, this
module's own included (no Content-Length, a body too large, a bad head, the
connection caps), is answered and counted by the API (`Api.refuse_edge`); this
module only moves bytes, and keeps a hostile network from starving real agents:

- the request head must arrive within `header_timeout` of the connection
  starting to wait for it (idle keep-alive included), the body within
  `request_timeout`; heads are capped at 16 KiB and parsed strictly (RFC 9112);
- at most `max_connections` connections, `max_per_address` from one address
  (an IPv6 client counts by its /64); at either cap a new connection first
  closes the connection that has waited longest for its request (a slowloris
  one, or an idle keep-alive), and only when every connection is busy with a
  request is the new one answered 503 and closed;
- the connection cap is lowered to what the open-file limit carries
  (`collector.fdlimit`), and failed accepts (EMFILE) are logged once an outage.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import ssl
import time
from collections import OrderedDict
from dataclasses import dataclass
from email.utils import formatdate
from functools import partial
from http import HTTPStatus
from typing import Any, Callable, Dict, Optional, Set, Tuple

from collector import __version__, fdlimit
from collector.answers import Request, Response, Route, auth_refusal, json_response
from collector.auth import AuthError, PasswordChecks
from collector.exposition import blocks
from collector.server import Api
from contract.rejections import REASON_BAD_REQUEST, REASON_LENGTH_REQUIRED, REASON_TOO_MANY_CONNECTIONS

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024
SERVER = f"vdiwatch-collector/{__version__}".encode()
# asyncio accepts this many connections at most before serving any of them; a few ticks' worth of
# accepted connections (and of evicted ones not yet closed) must fit in fdlimit.HEADROOM
ACCEPTS_PER_TICK = 32
# The kernel's accept queue (capped by net.core.somaxconn): queued connections cost no descriptor, and a
# deep queue keeps an agent's SYN from being dropped while a flood of connections is being shed.
LISTEN_BACKLOG = 4096
LINGER_SECONDS = 1.0  # a refused connection is read (and the bytes dropped) this long before it is closed
MAX_LINGERING = 64  # refused connections lingering at once; past that a refusal is a plain close
SHED_LOG_SECONDS = 60.0  # at most one log line this often about connections closed or refused at the caps
ACCEPT_FAILED = "socket.accept() out of system resource"  # asyncio's message for EMFILE, ENFILE, ENOBUFS, ENOMEM
ACCEPT_QUIET_SECONDS = 5.0  # an outage of accepts ends after this long without a failed accept

# Every answer: never cached (it is live state, or a refusal), never sniffed into another type.
COMMON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
# HTML pages: no script anywhere, one inline <style>, a GET filter form, never framed.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 5.6.2: methods and header names
_TARGET = re.compile(r"/[\x21-\x7e]*")  # origin-form, visible ASCII only
_VERSION = re.compile(r"HTTP/1\.[0-9]")
_FIELD_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # control characters other than HTAB
_LENGTH = re.compile(r"[0-9]{1,18}")  # ASCII digits; 18 are an exabyte, so int() is never slow
# Header fields that must not appear twice with different values; a second Host or
# Content-Length that disagrees is how requests are smuggled past a proxy.
_SINGLE = frozenset(("host", "content-length", "content-type", "content-encoding", "authorization",
                     "transfer-encoding", "expect"))


class BadRequest(ValueError):
    """A request head that breaks RFC 9112; answered 400 and the connection closed."""


@dataclass(frozen=True)
class Head:
    method: str
    target: str
    version: str
    headers: Dict[str, str]  # names lower-cased
    length: Optional[int]  # Content-Length, None when absent


def parse_head(head: bytes) -> Head:
    """The request line and header fields, strictly: anything a proxy might read differently is refused.

    `head` ends with the blank line. Raises BadRequest with a message for the 400 answer.
    """
    lines = head.decode("latin-1").split("\r\n")
    request_line = lines[0].split(" ")
    if len(request_line) != 3:
        raise BadRequest("malformed request line")
    method, target, version = request_line
    if not _TOKEN.fullmatch(method) or not _TARGET.fullmatch(target) or not _VERSION.fullmatch(version):
        raise BadRequest("malformed request line")
    headers: Dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):  # also refuses obs-fold and space before the colon
            raise BadRequest("malformed header field")
        value = value.strip(" \t")
        if _FIELD_VALUE_BAD.search(value):
            raise BadRequest("control character in a header field")
        key = name.lower()
        if key in headers:
            if key in _SINGLE and headers[key] != value:
                raise BadRequest(f"conflicting {name} header fields")
            if key not in _SINGLE:
                headers[key] = f"{headers[key]}, {value}"
            continue
        headers[key] = value
    length = headers.get("content-length")
    if length is not None:
        if not _LENGTH.fullmatch(length):
            raise BadRequest("bad Content-Length")
        if "transfer-encoding" in headers:
            raise BadRequest("Content-Length and Transfer-Encoding together")
    return Head(method, target, version, headers, None if length is None else int(length))


def keep_alive(version: str, headers: Dict[str, str]) -> bool:
    options = {o.strip() for o in headers.get("connection", "").lower().split(",")}
    if version == "HTTP/1.0":
        return "keep-alive" in options
    return "close" not in options


def answer_headers(response: Response) -> Dict[str, str]:
    """The fields every answer carries, plus the page protections on HTML; the response's own win."""
    out = dict(COMMON_HEADERS)
    if response.content_type.startswith("text/html"):
        out.update(PAGE_HEADERS)
    out.update(response.headers)
    return out


def response_head(response: Response, length: int, keep: bool, date: str) -> bytes:
    try:
        phrase = HTTPStatus(response.status).phrase
    except ValueError:
        phrase = ""
    lines = [f"HTTP/1.1 {response.status} {phrase}".encode(), b"Server: " + SERVER,
             b"Date: " + date.encode(),
             b"Content-Type: " + response.content_type.encode(),
             b"Content-Length: " + str(length).encode(),
             b"Connection: keep-alive" if keep else b"Connection: close"]
    lines += [f"{k}: {v}".encode("latin-1") for k, v in answer_headers(response).items()]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def address_key(peername: Any) -> str:
    """What the per-address cap counts: an IPv4 address, or an IPv6 /64 (one client gets a whole /64)."""
    if not isinstance(peername, tuple) or not peername:
        return ""
    host = str(peername[0])
    if ":" not in host:
        return host
    try:
        ip = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


class HttpServer:
    def __init__(self, api: Api, host: str, port: int, *, request_timeout: float = 10.0,
                 header_timeout: float = 5.0, tls: Optional[ssl.SSLContext] = None,
                 max_connections: int = 4096, max_per_address: int = 256,
                 passwords: Optional[PasswordChecks] = None,
                 fit_fd_limit: Callable[[int], Tuple[int, str]] = fdlimit.fit_connections):
        self.api = api
        self.host, self.port = host, port
        self.request_timeout = request_timeout
        self.header_timeout = header_timeout
        self.tls = tls
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.passwords = passwords or PasswordChecks()
        self.fit_fd_limit = fit_fd_limit
        self._server: Optional[asyncio.AbstractServer] = None
        # every admitted connection -> its address key and writer
        self._connections: Dict[asyncio.Task, Tuple[str, asyncio.StreamWriter]] = {}
        self._per_address: Dict[str, int] = {}
        # connections waiting for (the rest of) a request, longest-waiting first: the ones a cap closes
        self._waiting: "OrderedDict[asyncio.Task, None]" = OrderedDict()
        self._waiting_by_address: Dict[str, "OrderedDict[asyncio.Task, None]"] = {}
        self._busy: Set[asyncio.Task] = set()
        self._lingering = 0
        self.evicted = 0  # connections closed to make room, since start
        self.refused = 0  # connections answered 503 at a cap, since start
        self._shed_logged_at = float("-inf")
        self.accept_quiet_seconds = ACCEPT_QUIET_SECONDS
        self._accept_failures = 0
        self._accept_failing_since = self._accept_failed_at = 0.0
        self._previous_handler: Optional[Callable] = None

    async def start(self) -> Tuple[str, int]:
        cap, warning = self.fit_fd_limit(self.max_connections)
        if warning:
            log.warning("%s", warning)
        self.max_connections = cap
        loop = asyncio.get_running_loop()
        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_error)
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, ssl=self.tls, backlog=ACCEPTS_PER_TICK, limit=MAX_HEADER_BYTES,
            ssl_handshake_timeout=self.header_timeout if self.tls else None)
        for listening in self._server.sockets:  # asyncio ties the queue's depth to its accepts per tick
            deeper = socket.fromfd(listening.fileno(), listening.family, listening.type)
            try:
                deeper.listen(LISTEN_BACKLOG)
            finally:
                deeper.close()
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
        self.passwords.close()
        asyncio.get_running_loop().set_exception_handler(self._previous_handler)

    # -- connections --------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._accept_failures and time.monotonic() - self._accept_failed_at >= self.accept_quiet_seconds:
            self._accepting_again()
        key = address_key(writer.get_extra_info("peername"))
        refusal = self._admit(task, key, writer)
        if refusal:
            await self._refuse(reader, writer, refusal)
            return
        try:
            while await self._one_request(task, key, reader, writer):
                pass
        except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # slow, idle or vanished clients: nothing to answer
        except asyncio.CancelledError:
            pass  # closed to make room for a newer connection, or the server is stopping
        except Exception:  # noqa: BLE001 - the last line of defence for one connection
            log.exception("unexpected error on a connection")
        finally:
            self._forget(task, key)
            writer.close()

    def _admit(self, task: asyncio.Task, key: str, writer: asyncio.StreamWriter) -> str:
        """Count a new connection in, closing the longest-waiting one at a cap; or say why not."""
        if self._per_address.get(key, 0) >= self.max_per_address \
                and not self._evict(self._waiting_by_address.get(key)):
            return f"too many connections from this address (at most {self.max_per_address}); retry shortly"
        if len(self._connections) >= self.max_connections and not self._evict(self._waiting):
            return "the collector is at its connection limit; retry shortly"
        self._connections[task] = (key, writer)
        self._per_address[key] = self._per_address.get(key, 0) + 1
        return ""

    def _evict(self, queue: "Optional[OrderedDict[asyncio.Task, None]]") -> bool:
        if not queue:
            return False
        victim = next(iter(queue))
        key, writer = self._connections[victim]
        self._forget(victim, key)
        writer.transport.abort()  # its descriptor goes now, not when its task next runs
        victim.cancel()
        self.evicted += 1
        self._log_shedding()
        return True

    def _forget(self, task: asyncio.Task, key: str) -> None:
        if self._connections.pop(task, None) is None:
            return
        left = self._per_address.get(key, 1) - 1
        if left > 0:
            self._per_address[key] = left
        else:
            self._per_address.pop(key, None)
        self._set_waiting(task, key, False)

    def _set_waiting(self, task: asyncio.Task, key: str, waiting: bool) -> None:
        """Waiting connections are queued oldest first; a connection with a request in hand is not."""
        self._waiting.pop(task, None)
        mine = self._waiting_by_address.get(key)
        if mine is not None:
            mine.pop(task, None)
        if waiting:
            self._waiting[task] = None
            if mine is None:
                mine = self._waiting_by_address[key] = OrderedDict()
            mine[task] = None
        elif mine is not None and not mine:
            del self._waiting_by_address[key]

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, message: str) -> None:
        """Answer 503 and close; the client's bytes are read for a moment first, so that the
        close does not turn into a reset that destroys the answer before it is read."""
        self.refused += 1
        self._log_shedding()
        if self._lingering >= MAX_LINGERING:
            writer.transport.abort()
            return
        self._lingering += 1
        try:
            response = self.api.refuse_edge(503, REASON_TOO_MANY_CONNECTIONS, message, {"Retry-After": "1"})
            writer.write(response_head(response, len(response.payload()), False, formatdate(usegmt=True))
                         + response.payload())
            if writer.can_write_eof():
                writer.write_eof()
            await asyncio.wait_for(_discard(reader), LINGER_SECONDS)
        except (asyncio.TimeoutError, ConnectionError, OSError, ssl.SSLError):
            pass
        finally:
            self._lingering -= 1
            writer.close()

    def _log_shedding(self) -> None:
        now = time.monotonic()
        if now - self._shed_logged_at < SHED_LOG_SECONDS:
            return
        self._shed_logged_at = now
        log.warning("at the connection limits (%d in all, %d per address): %d waiting connection(s) closed "
                    "and %d new one(s) refused since start; logged at most once a minute",
                    self.max_connections, self.max_per_address, self.evicted, self.refused)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: Dict[str, Any]) -> None:
        """asyncio reports a failed accept once per pending connection, each with a traceback; count them."""
        if context.get("message") == ACCEPT_FAILED:
            self._accept_failed(context.get("exception"))
        elif self._previous_handler is not None:
            self._previous_handler(loop, context)
        else:
            loop.default_exception_handler(context)

    def _accept_failed(self, error: Optional[BaseException]) -> None:
        self._accept_failures += 1
        self._accept_failed_at = time.monotonic()
        if self._accept_failures == 1:
            self._accept_failing_since = self._accept_failed_at
            log.error("cannot accept new connections: %s; they wait in the listen backlog while %d are open "
                      "(asyncio retries every second; logged again once accepting works)",
                      getattr(error, "strerror", None) or error, len(self._connections))

    def _accepting_again(self) -> None:
        log.warning("accepting connections again after %d failed accept(s) over %.1f s",
                    self._accept_failures, time.monotonic() - self._accept_failing_since)
        self._accept_failures = 0

    # -- requests -----------------------------------------------------------

    async def _one_request(self, task: asyncio.Task, key: str, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection should close."""
        self._set_waiting(task, key, True)
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.header_timeout)
        except asyncio.LimitOverrunError:
            await self._send(writer, "GET", self.api.refuse_edge(431, REASON_BAD_REQUEST, "request headers too large"),
                             False)
            return False
        except asyncio.IncompleteReadError:
            return False
        try:
            head = parse_head(raw)
        except BadRequest as e:
            await self._send(writer, "GET", self.api.refuse_edge(400, REASON_BAD_REQUEST, str(e)), False)
            return False
        method, headers = head.method, head.headers
        body = b""
        if "transfer-encoding" in headers:
            await self._send(writer, method, self.api.refuse_edge(
                411, REASON_LENGTH_REQUIRED, "send the body with a Content-Length, not chunked"), False)
            return False
        if head.length is not None:
            if head.length > self.api.max_body_bytes:
                await self._send(writer, method, self.api.body_too_large(), False)
                return False  # the unread body makes the connection unusable
            if headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = await asyncio.wait_for(reader.readexactly(head.length), self.request_timeout)
        elif method == "POST":
            await self._send(writer, method, self.api.refuse_edge(
                411, REASON_LENGTH_REQUIRED, "Content-Length is required"), False)
            return False
        self._set_waiting(task, key, False)
        request = Request(method, head.target, headers, body)
        keep = keep_alive(head.version, headers)
        self._busy.add(task)
        try:
            await self._send(writer, method, await self._answer(request, key), keep)
        finally:
            self._busy.discard(task)
        return keep

    async def _answer(self, request: Request, client: str) -> Response:
        route = self._safely(request, partial(self.api.route, request))
        if not isinstance(route, Route):
            return route
        if route.protected:
            try:
                await self.passwords.check(self.api.scrape_auth, request.header("authorization"), client)
            except AuthError as e:
                return auth_refusal(e)
        if route.slow:
            return await asyncio.get_running_loop().run_in_executor(None, self._safely, request, route.answer)
        return self._safely(request, route.answer)

    @staticmethod
    def _safely(request: Request, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception:  # noqa: BLE001 - the one place where an unexpected error is reported
            log.exception("internal error while serving %s %s", request.method, request.path)
            return json_response(500, {"error": "internal error; see the collector's log"})

    async def _send(self, writer: asyncio.StreamWriter, method: str, response: Response, keep: bool) -> None:
        parts = response.body if isinstance(response.body, list) else [response.body]
        head = response_head(response, sum(map(len, parts)), keep, formatdate(usegmt=True))
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


async def _discard(reader: asyncio.StreamReader) -> None:
    """Read and drop what the client sends until it closes (the caller bounds the time)."""
    while await reader.read(64 * 1024):
        pass
