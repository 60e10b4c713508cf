"""One poll of the Monitor Service's `Machines`: every page, or nothing.

Every byte from the controller is hostile. A page is read in chunks against a
size cap and one deadline for the whole poll (a server that drips a byte a
second is cut off, whatever the socket timeouts say). The deadline holds for
every byte, not only the page's: a watchdog shuts down the poll's sockets when
it passes, so a head (or a TLS handshake) sent a byte at a time, and the reads
that NTLM/Negotiate libraries and the Citrix Cloud token request make on their
own, end with it too. Every answer but a streamed 200 (a 401's challenge page,
a 302, a 500) is read by the same bounded reader before any library sees it,
so `response.content` in an authentication library never reads more than
`MAX_OTHER_BODY`; an answer's head is capped at `MAX_HEAD_BYTES` as it is read. No
connection outlives its poll. Redirects are not followed; a next link must
stay on the configured scheme, host and port (the credentials go with it) and
never repeat; pages and machines are capped. Any
failure fails the whole poll with one reason from `FAILURE_REASONS`, so that a
half-read farm never replaces the last complete one.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import threading
import time
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple
from urllib.parse import SplitResult, quote, urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from broker.config import ODataSection
from broker.odata import Machine, MalformedPage, Options, Problem, parse_page, shown

log = logging.getLogger(__name__)

FAILURE_REASONS = ("connect", "timeout", "tls", "auth", "rate_limited", "http_status", "too_large",
                   "malformed", "bad_next_link", "too_many_pages", "too_many_machines")
SELECT = "Id,Name,DnsName,IsInMaintenanceMode,CurrentRegistrationState,CurrentPowerState,DesktopGroupId"
CHUNK = 64 * 1024
HEADERS = {"Accept": "application/json", "Accept-Encoding": "identity"}
# Any answer but a streamed 200 (a 401 challenge, a redirect, an error page) is read whole
# before the caller sees it, up to this much; NTLM/Negotiate libraries then reuse the bytes.
MAX_OTHER_BODY = 64 * 1024
# An answer's head (status line and headers), counted as it is read. http.client's own limits
# (100 lines of 64 KiB) let 6.5 MB through, which its parser turns into some 40 MiB.
MAX_HEAD_BYTES = 64 * 1024


class HeadTooLarge(http.client.HTTPException):
    """The answer's head is longer than MAX_HEAD_BYTES (urllib3 wraps it in a ProtocolError)."""


class _CountedHead:
    """The socket's file while http.client reads a head: each line counted against the cap."""

    def __init__(self, fp: Any, limit: int):
        self._fp, self._left = fp, limit

    def readline(self, limit: int = -1) -> bytes:
        line = self._fp.readline(min(limit, self._left + 1) if limit >= 0 else self._left + 1)
        self._left -= len(line)
        if self._left < 0:
            raise HeadTooLarge(f"HeadTooLarge: the answer's head is longer than {MAX_HEAD_BYTES} bytes")
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fp, name)


class _CappedResponse(http.client.HTTPResponse):
    def begin(self) -> None:
        fp = self.fp
        self.fp = _CountedHead(fp, MAX_HEAD_BYTES)
        try:
            super().begin()
        finally:
            if self.fp is not None:
                self.fp = fp


class PollError(Exception):
    """The poll failed; `reason` is one of FAILURE_REASONS, the message is safe to log."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class PollResult:
    machines: Dict[str, Machine] = field(default_factory=dict)
    problems: List[Problem] = field(default_factory=list)
    pages: int = 0

    def counts(self, kind: str) -> Counter:
        return Counter(p.key for p in self.problems if p.kind == kind)


def first_url(o: ODataSection) -> str:
    """`<url>/Machines?$select=...&$filter=...&$expand=...` (and `$top`/`$orderby` when paging by $skip)."""
    params = [("$select", SELECT)]
    if o.filter:
        params.append(("$filter", o.filter))
    if o.expand:
        params.append(("$expand", o.expand))
    if o.page_size:
        params += [("$orderby", "Id"), ("$top", str(o.page_size))]
    query = "&".join(f"{k}={quote(v, safe=',()=$')}" for k, v in params)
    return f"{o.url.rstrip('/')}/Machines?{query}"


def read_bounded(resp: requests.Response, limit: int, deadline: float, what: str = "the answer") -> bytes:
    """The body, at most `limit` bytes, complete before `deadline` (time.monotonic).

    Read with `read1`, which returns what has arrived, so that the deadline is checked
    while a server drips its answer; a silent server is cut off by the socket timeout.
    The body is read as sent: identity was asked for, and a compressed answer (a
    decompression bomb's way past the cap) is refused."""
    length = resp.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > limit:
        raise PollError("too_large", f"{what} announces {length} bytes, more than the {limit} allowed")
    encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise PollError("malformed", f"{what} is compressed (Content-Encoding {encoding[:20]!r}), "
                                     "though identity was asked for")
    raw = resp.raw
    if getattr(resp, "_content_consumed", False) and isinstance(getattr(resp, "_content", None), bytes):
        return resp._content  # already read, bounded, by BoundedAdapter
    read = getattr(raw, "read1", None) or raw.read  # urllib3 >= 2 has read1
    chunks: List[bytes] = []
    size = 0
    try:
        while True:
            if time.monotonic() > deadline:
                raise PollError("timeout", f"{what} did not arrive within the poll's deadline")
            chunk = read(CHUNK, decode_content=False)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise PollError("too_large", f"{what} is larger than the {limit} bytes allowed")
            chunks.append(chunk)
    except PollError:
        raise
    except (requests.RequestException, OSError, urllib3.exceptions.HTTPError) as e:
        raise _request_error(e, deadline, what) from None
    return b"".join(chunks)


def _request_error(e: Exception, deadline: Optional[float] = None, what: str = "the answer") -> PollError:
    if deadline is not None and time.monotonic() >= deadline:  # the watchdog shut the socket
        return PollError("timeout", f"{what} did not arrive within the poll's deadline")
    if "HeadTooLarge" in str(e) or "LineTooLong" in str(e) or "more than 100 headers" in str(e):
        return PollError("too_large", f"the head of {what} is longer than the {MAX_HEAD_BYTES} bytes allowed")
    if isinstance(e, urllib3.exceptions.ProtocolError) and "IncompleteRead" in str(e) or \
            isinstance(e, requests.exceptions.ChunkedEncodingError):
        return PollError("malformed", f"{what} ended before the length it announced (Content-Length or chunk)")
    if isinstance(e, (requests.Timeout, TimeoutError, urllib3.exceptions.TimeoutError)) or \
            "timed out" in str(e).lower():
        return PollError("timeout", f"no answer within the timeout ({type(e).__name__})")
    if isinstance(e, requests.exceptions.SSLError):
        return PollError("tls", "the TLS handshake or certificate check failed")
    return PollError("connect", f"cannot reach the controller ({type(e).__name__})")


def resolve(host: str, port: int, seconds: float,
            lookup: Optional[Callable[..., Any]] = None) -> List[str]:
    """The addresses of `host`, in the resolver's order, or PollError("connect") when the resolver
    does not answer within `seconds`: a name lookup has no socket for the watchdog to shut, so it
    runs on a thread of its own that is left to finish (the resolver's own timeouts end it)."""
    done: Dict[str, Any] = {}

    def ask() -> None:
        try:
            done["infos"] = (lookup or socket.getaddrinfo)(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            done["error"] = e

    worker = threading.Thread(target=ask, daemon=True, name="broker-name-lookup")
    worker.start()
    worker.join(max(0.0, seconds))
    if worker.is_alive():
        raise PollError("connect", f"the name lookup of {shown(host)} did not answer within the poll's deadline")
    if "error" in done:
        raise PollError("connect", f"the name lookup of {shown(host)} failed ({type(done['error']).__name__})")
    addresses: List[str] = []
    for info in done["infos"]:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def _is_address(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except (OSError, ValueError):
        return False
    return True


class _Watched:
    """A urllib3 connection the adapter's watchdog can shut down, even mid-handshake; its name lookup
    is bounded by the poll's deadline too."""

    adapter: "BoundedAdapter"
    _dup: Optional[socket.socket] = None
    response_class = _CappedResponse

    def _new_conn(self) -> socket.socket:
        deadline, name = self.adapter.deadline, self._dns_host  # type: ignore[attr-defined]
        if deadline is None or _is_address(name):
            sock = super()._new_conn()  # type: ignore[misc]
        else:
            sock = self._connect_any(name, resolve(name, self.port, deadline - time.monotonic()))  # type: ignore[attr-defined]
        # The TLS wrap detaches `sock`: a duplicate lets the watchdog shut it during the handshake.
        self._dup = sock.dup()
        self.adapter._watch(self)
        return sock

    def _connect_any(self, name: str, addresses: List[str]) -> socket.socket:
        """urllib3's own connect to each address in turn (the resolver's order), as it does to a name."""
        last: Optional[Exception] = None
        try:
            for address in addresses:
                self._dns_host = address
                try:
                    return super()._new_conn()  # type: ignore[misc]
                except (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError) as e:
                    last = e
        finally:
            self._dns_host = name
        raise last if last is not None else PollError("connect", f"{shown(name)} has no address")

    def connect(self) -> None:
        try:
            super().connect()  # type: ignore[misc]
        finally:
            dup, self._dup = self._dup, None
            if dup is not None:
                dup.close()

    def _shut(self) -> None:
        for s in (self._dup, getattr(self, "sock", None)):
            if s is not None:
                with contextlib.suppress(OSError, ValueError):
                    # socket.socket's, not SSLSocket's (which unwraps under a reading thread's feet)
                    socket.socket.shutdown(s, socket.SHUT_RDWR)


class BoundedAdapter(HTTPAdapter):
    """requests' adapter with the reader's bounds on every request, whoever sends it.

    Within `until(deadline)`, no request outlasts the deadline (a watchdog shuts the
    sockets); every answer's head is capped; every answer but a streamed 200 is read
    through `read_bounded` (at most `MAX_OTHER_BODY`) before send returns, so an
    authentication library that reads `response.content` gets those bytes. When the
    outermost window closes, the pool is emptied: no connection outlives a poll.
    """

    def __init__(self, other_body_limit: int = MAX_OTHER_BODY):
        self.other_body_limit = other_body_limit
        self.deadline: Optional[float] = None
        self.expired = False
        self._conns: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._lock = threading.Lock()
        super().__init__(max_retries=0)

    def _classes(self) -> Dict[str, type]:
        attrs = {"adapter": self}
        conn = type("WatchedHTTPConnection", (_Watched, HTTPConnection), attrs)
        tls = type("WatchedHTTPSConnection", (_Watched, HTTPSConnection), attrs)
        return {"http": type("WatchedPool", (HTTPConnectionPool,), {"ConnectionCls": conn}),
                "https": type("WatchedTLSPool", (HTTPSConnectionPool,), {"ConnectionCls": tls})}

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._classes()

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        if proxy.lower().startswith("http"):
            manager.pool_classes_by_scheme = self._classes()
        return manager

    def _watch(self, conn: Any) -> None:
        with self._lock:
            self._conns.add(conn)
            expired = self.expired
        if expired:
            conn._shut()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            conns = list(self._conns)
        for conn in conns:
            conn._shut()

    @contextlib.contextmanager
    def until(self, deadline: float) -> Iterator[float]:
        """Bound every request until the window closes by `deadline`; yields the deadline in
        force (an enclosing window's, when earlier: the token request inside a poll)."""
        if self.deadline is not None:
            yield min(deadline, self.deadline)
            return
        self.deadline, self.expired = deadline, False
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._expire)
        timer.daemon = True
        timer.start()
        try:
            yield deadline
        finally:
            timer.cancel()
            self.poolmanager.clear()
            for manager in self.proxy_manager.values():  # an HTTP(S)_PROXY's connections end with the poll too
                manager.clear()
            with self._lock:
                self.deadline, self.expired = None, False
                self._conns = weakref.WeakSet()

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        deadline = self.deadline
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PollError("timeout", "the poll's deadline passed before this request")
            timeout = _capped(timeout, remaining)
        resp = super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)
        if not stream or resp.status_code != 200:
            # Reading to the end closes the socket's file; an NTLM library binds its answer to the
            # server's certificate (channel binding), so keep that first (broker.auth reads it).
            sock = getattr(getattr(resp.raw, "connection", None), "sock", None)
            with contextlib.suppress(OSError, ValueError, AttributeError):
                resp.peer_certificate = sock.getpeercert(True) if hasattr(sock, "getpeercert") else None
            what = f"the HTTP {resp.status_code} answer"
            body = read_bounded(resp, self.other_body_limit, deadline or time.monotonic() + _seconds(timeout), what)
            resp._content, resp._content_consumed = body, True
        return resp


def _capped(timeout: Any, remaining: float) -> Any:
    if isinstance(timeout, tuple):
        return tuple(remaining if t is None else min(t, remaining) for t in timeout)
    return remaining if timeout is None else min(timeout, remaining)


def _seconds(timeout: Any) -> float:
    if isinstance(timeout, tuple):
        timeout = timeout[-1]
    return 30.0 if timeout is None else float(timeout)


def bounded_session() -> requests.Session:
    """A session whose every http(s) request goes through a `BoundedAdapter`."""
    session = requests.Session()
    adapter = BoundedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def window(session: requests.Session, url: str, deadline: float) -> "contextlib.AbstractContextManager[float]":
    """The bounded window of `session`'s adapter for `url` (just the deadline for another adapter)."""
    adapter = session.get_adapter(url)
    if isinstance(adapter, BoundedAdapter):
        return adapter.until(deadline)
    return contextlib.nullcontext(deadline)


def _origin(parts: SplitResult) -> Tuple[str, str, int]:
    """Scheme, host and port, the port written or not: what a next link must keep."""
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class Poller:
    """Reads every page of `Machines` from the configured endpoint with `auth`."""

    def __init__(self, o: ODataSection, options: Options, auth: Optional[requests.auth.AuthBase] = None,
                 session: Optional[requests.Session] = None, monotonic: Callable[[], float] = time.monotonic):
        self.o = o
        self.options = options
        self.auth = auth
        self.session = session or bounded_session()
        self.monotonic = monotonic
        self.origin = _origin(urlsplit(o.url))
        self.verify: Any = (o.ca_file or True) if o.verify_tls else False

    def poll(self) -> PollResult:
        deadline = self.monotonic() + self.o.poll_timeout
        # The watchdog runs on time.monotonic, whatever clock the poller was given.
        with window(self.session, self.o.url, time.monotonic() + self.o.poll_timeout):
            return self._poll(deadline)

    def _poll(self, deadline: float) -> PollResult:
        result = PollResult()
        url: Optional[str] = first_url(self.o)
        seen: Set[str] = set()
        entries = 0
        skip = 0
        while url is not None:
            if result.pages >= self.o.max_pages:
                raise PollError("too_many_pages", f"more than {self.o.max_pages} pages (odata.max_pages)")
            seen.add(url)
            page = self._page(url, deadline)
            result.pages += 1
            entries += page.entries
            if entries > self.o.max_machines:
                raise PollError("too_many_machines", f"more than {self.o.max_machines} machines (odata.max_machines)")
            for machine in page.machines:
                if machine.host in result.machines:
                    result.problems.append(Problem("skip", "duplicate", f"{machine.host}: listed twice; "
                                                   "the first entry is kept"))
                    continue
                result.machines[machine.host] = machine
            result.problems += page.problems
            url = self._next(url, page.next_link, seen, page.entries)
            if url is not None and page.next_link is None:
                skip += page.entries
                url = f"{first_url(self.o)}&$skip={skip}"
        return result

    def _next(self, current: str, link: Optional[str], seen: Set[str], entries: int) -> Optional[str]:
        if link is None:
            # Client-driven paging: a full page asks for the next one ($skip); the caller builds it.
            return "" if self.o.page_size and entries >= self.o.page_size else None
        target = urljoin(current, link)
        parts = urlsplit(target)
        try:
            origin = _origin(parts)
        except ValueError:
            origin = None
        if origin != self.origin or parts.username is not None:
            raise PollError("bad_next_link", f"@odata.nextLink {shown(link)} leaves "
                                             f"{self.origin[0]}://{self.origin[1]}:{self.origin[2]}; not followed")
        if target in seen:
            raise PollError("bad_next_link", "@odata.nextLink repeats a page already read")
        return target

    def _page(self, url: str, deadline: float):
        remaining = deadline - self.monotonic()
        if remaining <= 0:
            raise PollError("timeout", f"the poll took longer than odata.poll_timeout ({self.o.poll_timeout:g} s)")
        timeout = min(self.o.timeout, remaining)
        try:
            resp = self.session.get(url, auth=self.auth, headers=HEADERS,
                                    timeout=(timeout, timeout), stream=True, allow_redirects=False,
                                    verify=self.verify)
        except PollError:
            raise
        except requests.RequestException as e:
            raise _request_error(e, deadline, "the page") from None
        except Exception as e:  # noqa: BLE001 - an authentication library's own error, named by type only
            if time.monotonic() >= deadline:
                raise PollError("timeout", "the page did not arrive within the poll's deadline") from None
            raise PollError("auth", f"the authentication library failed on the controller's answer "
                                    f"({type(e).__module__.split('.')[0]}: {type(e).__name__})") from None
        with resp:
            if resp.status_code in (401, 403):
                forget = getattr(self.auth, "forget", None)
                if forget is not None:
                    forget()
                raise PollError("auth", f"the controller answered HTTP {resp.status_code} (check [auth] and "
                                        "the account's read-only Monitor access)")
            if resp.status_code == 429:
                raise PollError("rate_limited", "the controller answered HTTP 429 (one OData query at a time "
                                                "per customer in Citrix Cloud); polling less often helps")
            if resp.status_code != 200:
                raise PollError("http_status", f"the controller answered HTTP {resp.status_code}")
            body = read_bounded(resp, self.o.max_response_bytes, deadline, "the page")
        try:
            doc = json.loads(body, parse_constant=_no_constant)
        except RecursionError:
            raise PollError("malformed", "the page nests too deeply to be Monitor data") from None
        except ValueError as e:
            raise PollError("malformed", f"the page is not JSON: {str(e)[:120]}") from None
        try:
            return parse_page(doc, self.options)
        except MalformedPage as e:
            raise PollError("malformed", str(e)) from None
