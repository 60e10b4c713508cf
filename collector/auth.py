"""Who may push and who may scrape.

Push tokens are random strings the collector never stores: its config holds
their SHA-256 hashes, each bound to a scope (a site, optionally a host-name
pattern). A request's token is hashed and compared against every configured hash
in constant time, so neither timing nor the config file gives a token away.
Scrapers of /metrics may be required to send a bearer token (hashed the same
way) or HTTP basic credentials (password stored as PBKDF2-SHA256).
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

PBKDF2_ITERATIONS = 200_000


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
            raise AuthError(401, "unauthenticated", "a bearer token is required (Authorization: Bearer ...)")
        digest = hash_token(token)
        found = None
        for scope in self.scopes:  # no early exit: the time taken does not depend on which one matched
            if hmac.compare_digest(digest, scope.sha256):
                found = scope
        if found is None:
            raise AuthError(401, "unauthenticated", "the bearer token is not known to this collector")
        return found

    @staticmethod
    def check_scope(scope: Optional[TokenScope], site: str, host: str) -> None:
        if scope is None or scope.allows(site, host):
            return
        raise AuthError(403, "forbidden",
                        f"this token may push for site {scope.site!r}, hosts {scope.hosts!r} only; "
                        f"the report is for site {site!r}, host {host!r}")


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
    """Optional protection of /metrics: a bearer token hash, basic credentials, or both."""

    def __init__(self, bearer_sha256: str = "", basic_user: str = "", basic_password_hash: str = ""):
        self.bearer_sha256 = bearer_sha256.lower()
        self.basic_user = basic_user
        self.basic = parse_password_hash(basic_password_hash) if basic_password_hash else None
        self._verified: Optional[str] = None  # digest of the last good basic header: PBKDF2 once, not per scrape

    @property
    def enabled(self) -> bool:
        return bool(self.bearer_sha256 or self.basic)

    def check(self, authorization: str) -> None:
        if not self.enabled:
            return
        token = bearer(authorization)
        if token is not None and self.bearer_sha256:
            if hmac.compare_digest(hash_token(token), self.bearer_sha256):
                return
        elif self.basic and authorization[:6].lower() == "basic ":
            if self._basic_ok(authorization[6:].strip()):
                return
        raise AuthError(401, "unauthenticated", "scraping /metrics requires credentials")

    def _basic_ok(self, encoded: str) -> bool:
        seen = hash_token(encoded)
        if self._verified is not None and hmac.compare_digest(seen, self._verified):
            return True
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        iterations, salt, expected = self.basic
        digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
        ok = hmac.compare_digest(user.encode(), self.basic_user.encode()) & hmac.compare_digest(digest, expected)
        if ok:
            self._verified = seen
        return ok
