"""How the broker proves who it is to the Delivery Controller or Citrix Cloud.

- `ntlm`: requests-ntlm with a user and password (optional package);
- `negotiate`: Windows integrated authentication: on Windows SSPI as the service's
  own account (requests-negotiate-sspi), elsewhere GSSAPI/Kerberos (requests-gssapi,
  requests-kerberos); optional packages;
- `citrix_cloud`: an API client's id and secret traded for a bearer token (OAuth 2.0
  client credentials), sent as `Authorization: CWSAuth bearer=<token>` with
  `Citrix-CustomerId`; the token is kept until shortly before it expires;
- `none`: nothing (a test double, or a proxy in front that authenticates).

A token or password never reaches a log line or an exception message. The token
request is bounded like a page (broker/fetch.py): its answer is read through the
same reader, within the poll's deadline when it shares the poll's session.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable, Optional

import requests
from requests.auth import AuthBase

from broker.config import AuthSection, auth_library
from broker.fetch import HEADERS, PollError, bounded_session, read_bounded, window
from contract.configfile import ConfigError

log = logging.getLogger(__name__)

TOKEN_MARGIN_SECONDS = 60.0  # a token is renewed this long before it expires
MAX_TOKEN_BYTES = 64 * 1024


def build_auth(a: AuthSection, timeout: float, verify: Any = True,
               session: Optional[requests.Session] = None) -> Optional[AuthBase]:
    """The requests auth object for `a`; ConfigError when its package is missing. Given the
    poller's session, the Cloud token request is held to the poll's deadline."""
    if a.method == "none":
        return None
    if a.method == "citrix_cloud":
        return CitrixCloudAuth(a.token_url.replace("{customer_id}", a.customer_id), a.customer_id,
                               a.client_id, a.client_secret, timeout=timeout, verify=verify, session=session)
    module = auth_library(a.method)
    if module is None:
        raise ConfigError("[auth]", [f"method \"{a.method}\": its Python package is not installed"])
    if a.method == "ntlm":
        return bounded_ntlm(module)(a.username, a.password)
    if module.__name__ == "requests_negotiate_sspi":
        return module.HttpNegotiateAuth()
    if module.__name__ == "requests_gssapi":
        return module.HTTPSPNEGOAuth()
    return module.HTTPKerberosAuth()


def bounded_ntlm(module: Any) -> type:
    """requests-ntlm's auth, taking the server's certificate (for channel binding) from what
    BoundedAdapter kept: the library looks for it in the socket of the 401, which the bounded
    reader has already read to its end and closed."""
    hash_of = getattr(getattr(module, "requests_ntlm", module), "_get_certificate_hash", None)

    class BoundedNtlmAuth(module.HttpNtlmAuth):  # type: ignore[name-defined,misc]
        def _get_server_cert(self, response: requests.Response) -> Optional[bytes]:
            der = getattr(response, "peer_certificate", None)
            if not self.send_cbt or der is None or hash_of is None:
                return None
            return hash_of(der)

    return BoundedNtlmAuth


class CitrixCloudAuth(AuthBase):
    """Bearer token from a Citrix Cloud API client, renewed before it expires."""

    def __init__(self, token_url: str, customer_id: str, client_id: str, client_secret: str,
                 timeout: float = 30.0, verify: Any = True, clock: Callable[[], float] = time.monotonic,
                 session: Optional[requests.Session] = None):
        self.token_url = token_url
        self.customer_id = customer_id
        self._client_id = client_id
        self._client_secret = client_secret
        self.timeout = timeout
        self.verify = verify
        self.clock = clock
        self.session = session or bounded_session()
        self._token: Optional[str] = None
        self._lifetime_warned = False
        self._expires = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never the secret or the token
        return f"CitrixCloudAuth(customer_id={self.customer_id!r})"

    def forget(self) -> None:
        """Drop the token (the API answered 401): the next request asks for a new one."""
        with self._lock:
            self._token = None

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"CWSAuth bearer={self.token()}"
        r.headers["Citrix-CustomerId"] = self.customer_id
        return r

    def token(self) -> str:
        with self._lock:
            if self._token is None or self.clock() >= self._expires:
                self._token, lifetime = self._fetch()
                self._expires = self.clock() + max(0.0, lifetime - TOKEN_MARGIN_SECONDS)
            return self._token

    def _fetch(self) -> "tuple[str, float]":
        with window(self.session, self.token_url, time.monotonic() + self.timeout) as deadline:
            return self._read_token(deadline)

    def _read_token(self, deadline: float) -> "tuple[str, float]":
        try:
            resp = self.session.post(
                self.token_url, data={"grant_type": "client_credentials", "client_id": self._client_id,
                                      "client_secret": self._client_secret},
                headers=HEADERS, timeout=max(0.001, min(self.timeout, deadline - time.monotonic())),
                verify=self.verify, stream=True, allow_redirects=False)
        except PollError as e:
            raise PollError(e.reason, f"the token request: {e}") from None
        except requests.RequestException:
            if time.monotonic() >= deadline:
                raise PollError("timeout", "the token request did not finish within the deadline") from None
            raise PollError("auth", "the token request failed: cannot reach the token endpoint") from None
        with resp:
            if resp.status_code != 200:
                raise PollError("auth", f"the token endpoint answered HTTP {resp.status_code}")
            body = read_bounded(resp, MAX_TOKEN_BYTES, deadline, "the token answer")
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise PollError("auth", "the token answer is not JSON") from None
        if not isinstance(doc, dict):
            raise PollError("auth", "the token answer is not a JSON object")
        # RFC 6749 5.1 names them access_token and expires_in; the older trust API token and expiresIn.
        token = doc.get("access_token", doc.get("token"))
        lifetime = doc.get("expires_in", doc.get("expiresIn", 3600))
        if not isinstance(token, str) or not token or len(token) > 16384 or not token.isprintable():
            raise PollError("auth", "the token answer has no usable access_token")
        if isinstance(lifetime, str) and lifetime.isascii() and lifetime.isdigit() and len(lifetime) <= 9:
            lifetime = int(lifetime)  # not "²" nor 5000 digits: int() raises on those
        if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)) or not 0 < lifetime <= 86400 * 7:
            if not self._lifetime_warned:  # once, not at every renewal
                log.warning("the token answer's expires_in (%s) is unusable; renewing the token every 5 minutes",
                            type(lifetime).__name__ if isinstance(lifetime, (str, list, dict)) else
                            str(lifetime)[:20])
                self._lifetime_warned = True
            lifetime = 300 + TOKEN_MARGIN_SECONDS
        return token, float(lifetime)
