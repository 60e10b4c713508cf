"""One poll of the Monitor Service's `Machines`: every page, or nothing.

Every byte from the controller is hostile. A page is read in chunks against a
size cap and one deadline for the whole poll (a server that drips a byte a
second is cut off, whatever the socket timeouts say); redirects are not
followed; a next link must stay on the configured scheme, host and port (the
credentials go with it) and never repeat; pages and machines are capped. Any
failure fails the whole poll with one reason from `FAILURE_REASONS`, so that a
half-read farm never replaces the last complete one.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Set, Tuple
from urllib.parse import SplitResult, quote, urljoin, urlsplit

import requests
import urllib3

from broker.config import ODataSection
from broker.odata import Machine, MalformedPage, Options, Problem, parse_page, shown

log = logging.getLogger(__name__)

FAILURE_REASONS = ("connect", "timeout", "tls", "auth", "rate_limited", "http_status", "too_large",
                   "malformed", "bad_next_link", "too_many_pages", "too_many_machines")
SELECT = "Id,Name,DnsName,IsInMaintenanceMode,CurrentRegistrationState,CurrentPowerState,DesktopGroupId"
CHUNK = 64 * 1024
HEADERS = {"Accept": "application/json", "Accept-Encoding": "identity"}


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
        raise _request_error(e) from None
    return b"".join(chunks)


def _request_error(e: Exception) -> PollError:
    if isinstance(e, (requests.Timeout, TimeoutError, urllib3.exceptions.TimeoutError)) or \
            "timed out" in str(e).lower():
        return PollError("timeout", f"no answer within the timeout ({type(e).__name__})")
    if isinstance(e, requests.exceptions.SSLError):
        return PollError("tls", "the TLS handshake or certificate check failed")
    return PollError("connect", f"cannot reach the controller ({type(e).__name__})")


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
        self.session = session or requests.Session()
        self.monotonic = monotonic
        self.origin = _origin(urlsplit(o.url))
        self.verify: Any = (o.ca_file or True) if o.verify_tls else False

    def poll(self) -> PollResult:
        deadline = self.monotonic() + self.o.poll_timeout
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
            raise _request_error(e) from None
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
