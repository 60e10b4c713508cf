"""Who may push and who may scrape.

Push tokens are random strings the collector never stores: its config holds
their SHA-256 hashes, each bound to a scope (a site, optionally a host-name
pattern). A request's token is hashed and compared against every configured hash
in constant time, so neither timing nor the config file gives a token away.
Scrapers of /metrics may be required to send a bearer token (hashed the same
way) or HTTP basic credentials (password stored as PBKDF2-SHA256).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import fnmatch
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

from contract.rejections import REASON_BUSY, REASON_FORBIDDEN, REASON_UNAUTHENTICATED

PBKDF2_ITERATIONS = 200_000
VERIFIED_TTL = 300.0  # seconds a verified basic header stays trusted after its last use
VERIFIED_MAX = 16  # verified basic headers remembered (scrapers, not users: a handful)


@dataclass(frozen=True)
class TokenScope:
    """One configured push token: `[[auth.tokens]]` in collector.toml."""

    sha256: str
    site: str
    hosts: str = "*"
    name: str = ""

    def allows(self, site: str, host: str) -> bool:
        return site == self.site and fnmatch.fnmatchcase(host.lower(), self.hosts.lower())

    @property
    def label(self) -> str:
        return self.name or f"site {self.site!r}"


class AuthError(Exception):
    """Refused: `status` is 401 (who are you?) or 403 (not yours to push)."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A random token of 256 bits, URL-safe, with a recognisable prefix."""
    return "vdw_" + secrets.token_urlsafe(32)


def bearer(authorization: str) -> Optional[str]:
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def is_valid_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower())


class PushAuth:
    """Maps a request's bearer token to its scope; no tokens configured means open."""

    def __init__(self, scopes: Sequence[TokenScope]):
        self.scopes = tuple(TokenScope(s.sha256.lower(), s.site, s.hosts, s.name) for s in scopes)

    @property
    def enabled(self) -> bool:
        return bool(self.scopes)

    def identify(self, authorization: str) -> Optional[TokenScope]:
        """The token's scope; raises AuthError(401) when missing or unknown. None when auth is off."""
        if not self.enabled:
            return None
        token = bearer(authorization)
        if token is None:
            raise AuthError(401, REASON_UNAUTHENTICATED, "a bearer token is required (Authorization: Bearer ...)")
        digest = hash_token(token)
        found = None
        for scope in self.scopes:  # no early exit: the time taken does not depend on which one matched
            if hmac.compare_digest(digest, scope.sha256):
                found = scope
        if found is None:
            raise AuthError(401, REASON_UNAUTHENTICATED, "the bearer token is not known to this collector")
        return found

    @staticmethod
    def check_scope(scope: Optional[TokenScope], site: str, host: str) -> None:
        if scope is None or scope.allows(site, host):
            return
        raise AuthError(403, REASON_FORBIDDEN,
                        f"this token may push for site {scope.site!r}, hosts {scope.hosts!r} only; "
                        f"the report is for site {site!r}, host {host!r}")


class Access:
    """Who may push and who may scrape, replaced whole by a reload: a request reads both from one
    `Access` at a time, and requests in flight finish with the pair they started with."""

    def __init__(self, push: Optional[PushAuth] = None, scrape: Optional["ScrapeAuth"] = None):
        self._pair = (push or PushAuth(()), scrape or ScrapeAuth())

    @property
    def push(self) -> PushAuth:
        return self._pair[0]

    @property
    def scrape(self) -> "ScrapeAuth":
        return self._pair[1]

    def use(self, push: PushAuth, scrape: "ScrapeAuth") -> None:
        self._pair = (push, scrape)


def hash_password(password: str, salt: Optional[bytes] = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """'pbkdf2_sha256$ITERATIONS$SALT$HASH', salt and hash in base64."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return "$".join(("pbkdf2_sha256", str(iterations), base64.b64encode(salt).decode(),
                     base64.b64encode(digest).decode()))


def parse_password_hash(value: str) -> Optional[Tuple[int, bytes, bytes]]:
    parts = value.split("$")
    if len(parts) != 4 or parts[0] != "pbkdf2_sha256" or not parts[1].isdigit():
        return None
    try:
        return int(parts[1]), base64.b64decode(parts[2], validate=True), base64.b64decode(parts[3], validate=True)
    except (binascii.Error, ValueError):
        return None


class ScrapeAuth:
    """Optional protection of /metrics and the pages: a bearer token hash, basic credentials, or both.

    A bearer token costs one SHA-256, so it is checked wherever the request is.
    A basic password costs a PBKDF2 (tens of milliseconds by design): `quick`
    decides every case that needs none (no auth, bearer, a malformed header, a
    recently verified header), and leaves the rest to `verify`, which callers on
    an event loop run in a worker thread (`PasswordChecks`).
    """

    def __init__(self, bearer_sha256: str = "", basic_user: str = "", basic_password_hash: str = "",
                 clock: Callable[[], float] = time.monotonic):
        self.bearer_sha256 = bearer_sha256.lower()
        self.basic_user = basic_user
        self.basic = parse_password_hash(basic_password_hash) if basic_password_hash else None
        self.clock = clock
        # SHA-256 of a verified basic header -> when its trust ends; a scraper sends the same header
        # every time, so PBKDF2 runs once, not once per scrape. A reload builds a new ScrapeAuth: a
        # changed password is never answered from here.
        self._verified: "OrderedDict[str, float]" = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.bearer_sha256 or self.basic)

    def check(self, authorization: str) -> None:
        """Raises AuthError(401) unless the credentials are good; may run a PBKDF2 in this thread."""
        ok = self.quick(authorization)
        if ok is None:
            ok = self.verify(authorization)
        if not ok:
            raise refused_scrape()

    def quick(self, authorization: str) -> Optional[bool]:
        """True or False when that costs no password hashing; None when only `verify` can tell."""
        if not self.enabled:
            return True
        token = bearer(authorization)
        if token is not None:
            return bool(self.bearer_sha256) and hmac.compare_digest(hash_token(token), self.bearer_sha256)
        if not self.basic or authorization[:6].lower() != "basic ":
            return False
        encoded = authorization[6:].strip()
        if _basic_credentials(encoded) is None:
            return False
        return True if self._recently_verified(hash_token(encoded)) else None

    def verify(self, authorization: str) -> bool:
        """The PBKDF2 of the presented password against the configured hash: slow on purpose."""
        if not self.basic or authorization[:6].lower() != "basic ":
            return False
        encoded = authorization[6:].strip()
        credentials = _basic_credentials(encoded)
        if credentials is None:
            return False
        user, password = credentials
        iterations, salt, expected = self.basic
        digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
        ok = hmac.compare_digest(user.encode(), self.basic_user.encode()) & hmac.compare_digest(digest, expected)
        if ok:
            self._remember(hash_token(encoded))
        return bool(ok)

    def _recently_verified(self, seen: str) -> bool:
        """Whether `seen` was verified and used within VERIFIED_TTL; using it extends its trust, so a
        scraper stays trusted while it scrapes (also through a flood of wrong passwords)."""
        now = self.clock()
        found = None
        with self._lock:
            for digest, until in list(self._verified.items()):
                if until <= now:
                    del self._verified[digest]
                elif hmac.compare_digest(digest, seen):  # no early exit: constant in which entry matched
                    found = digest
            if found is not None:
                self._verified[found] = now + VERIFIED_TTL
                self._verified.move_to_end(found)
        return found is not None

    def _remember(self, seen: str) -> None:
        with self._lock:
            self._verified.pop(seen, None)
            self._verified[seen] = self.clock() + VERIFIED_TTL
            while len(self._verified) > VERIFIED_MAX:
                self._verified.popitem(last=False)


def refused_scrape() -> AuthError:
    return AuthError(401, REASON_UNAUTHENTICATED, "scraping /metrics requires credentials")


def _basic_credentials(encoded: str) -> Optional[Tuple[str, str]]:
    """(user, password) from the base64 of an Authorization: Basic header; None when malformed."""
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return (user, password) if sep else None


class PasswordChecks:
    """Runs basic-password verifications on a small pool of threads, never on the event loop.

    hashlib's pbkdf2_hmac releases the GIL while it hashes (measured: a Python
    thread beside it runs at full speed), so the loop goes on serving pushes.
    At most `max_pending` verifications wait or run at once, `max_per_client`
    of them for one client address; a flood of wrong passwords beyond that is
    answered 503 at once instead of queuing without bound, one flooding address
    leaves the other slots to everyone else, and the pool's size bounds the
    CPU a flood can take. Only the event loop's thread calls `check`.
    """

    def __init__(self, workers: int = 1, max_pending: int = 8, max_per_client: int = 2):
        self.max_pending = max_pending
        self.max_per_client = max_per_client
        self.pending = 0
        self._by_client: Dict[str, int] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vdiwatch-password")

    async def check(self, scrape: ScrapeAuth, authorization: str, client: str = "") -> None:
        """Raises AuthError: 401 for bad credentials, 503 when too many checks are already pending."""
        ok = scrape.quick(authorization)
        if ok is None:
            mine = self._by_client.get(client, 0)
            if self.pending >= self.max_pending or mine >= self.max_per_client:
                raise AuthError(503, REASON_BUSY, "too many password checks in progress; retry shortly")
            self.pending += 1
            self._by_client[client] = mine + 1
            try:
                ok = await asyncio.get_running_loop().run_in_executor(self._pool, scrape.verify, authorization)
            finally:
                self.pending -= 1
                left = self._by_client[client] - 1
                if left:
                    self._by_client[client] = left
                else:
                    del self._by_client[client]
        if not ok:
            raise refused_scrape()

    def close(self) -> None:
        self._pool.shutdown(wait=False)
