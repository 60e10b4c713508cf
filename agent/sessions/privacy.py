"""User names in reports: a keyed-hash pseudonym by default, the plain name only on opt-in.

European public administrations run many of these farms; under the GDPR's data
minimisation a monitoring system should not ship who was logged on where and
when unless the operator decided it needs to. A pseudonym still lets the
collector count distinct users and follow one user across hosts and days
(same site secret, same pseudonym), without naming them.

The pseudonym is "u-" + the first 12 hex digits of HMAC-SHA256(secret, name),
where name is normalized (see `normalize`) so that one person gets one
pseudonym whether Windows says "CORP\\JDoe" or a Linux VDA says "jdoe@corp.example".
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Dict

from contract.report import fits_label

log = logging.getLogger(__name__)

PREFIX = "u-"
DIGITS = 12  # 48 bits: collisions stay unlikely (~1e-5) even among 100,000 users
_CACHE_MAX = 10000


def normalize(user: str) -> str:
    """The form that is hashed (and reported as plain name): domain dropped, lower-cased.

    "CORP\\JDoe", "jdoe@corp.example", "JDOE" and " jdoe " all become "jdoe".
    The domain is dropped, not kept, because hosts disagree on it (Windows
    gives the NetBIOS domain, SSSD the UPN suffix, winbind with a default
    domain none at all); the price is that two people with the same account
    name in two domains of one site share a pseudonym.
    """
    name = user.strip()
    if "\\" in name:
        name = name.rsplit("\\", 1)[1]
    if "@" in name:
        name = name.split("@", 1)[0]
    return name.strip().lower()


def pseudonym(user: str, secret: str) -> str:
    """ "u-" + 12 hex digits of HMAC-SHA256 keyed with `secret`; "" for an unknown user.

    >>> pseudonym("CORP\\\\JDoe", "s3cret") == pseudonym("jdoe@corp.example", "s3cret")
    True
    """
    name = normalize(user)
    if not name:
        return ""
    digest = hmac.new(secret.encode("utf-8"), name.encode("utf-8"), hashlib.sha256).hexdigest()
    return PREFIX + digest[:DIGITS]


def site_key(site: str) -> str:
    """The key used when no secret is configured: anyone who knows the site can recompute it."""
    return f"vdiwatch-site:{site}"


class Pseudonymizer:
    """Turns raw user names into the label the report carries, per the operator's choice.

    With `enabled` (the default) the label is a pseudonym keyed with `secret`,
    or, when none is set, with the site name, which is logged once as a
    warning because such pseudonyms can be reversed by trying names. With
    `enabled` false the label is the normalized plain name (or its pseudonym
    if that name could not be a label value: too long, control characters).
    """

    def __init__(self, secret: str = "", site: str = "default", enabled: bool = True):
        self.enabled = enabled
        if enabled and not secret:
            log.warning("sessions.pseudonym_secret is not set: user pseudonyms are keyed with the site name "
                        "and can be reversed by anyone who knows the site and can guess user names; "
                        "set pseudonym_secret (or pseudonym_secret_file) to the same secret on every host")
        self._key = secret or site_key(site)
        self._cache: Dict[str, str] = {}

    def label(self, user: str) -> str:
        cached = self._cache.get(user)
        if cached is not None:
            return cached
        value = self._compute(user)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[user] = value
        return value

    def _compute(self, user: str) -> str:
        if self.enabled:
            return pseudonym(user, self._key)
        name = normalize(user)
        if not name or fits_label(name):
            return name
        return pseudonym(user, self._key)
