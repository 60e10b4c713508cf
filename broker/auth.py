"""How the broker proves who it is to the Delivery Controller or Citrix Cloud.

- `ntlm`: requests-ntlm with a user and password (optional package);
- `negotiate`: Windows integrated authentication: on Windows SSPI as the service's
  own account (requests-negotiate-sspi), elsewhere GSSAPI/Kerberos (requests-gssapi,
  requests-kerberos); optional packages;
- `citrix_cloud`: an API client's id and secret traded for a bearer token (OAuth 2.0
  client credentials), sent as `Authorization: CWSAuth bearer=<token>` with
  `Citrix-CustomerId`; the token is kept until shortly before it expires;
- `none`: nothing (a test double, or a proxy in front that authenticates).

A token or password never reaches a log line or an exception message.
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
from broker.fetch import HEADERS, PollError, read_bounded
from contract.configfile import ConfigError

log = logging.getLogger(__name__)

TOKEN_MARGIN_SECONDS = 60.0  # a token is renewed this long before it expires
MAX_TOKEN_BYTES = 64 * 1024


def build_auth(a: AuthSection, timeout: float, verify: Any = True) -> Optional[AuthBase]:
    """The requests auth object for `a`; ConfigError when its package is missing."""
    if a.method == "none":
        return None
    if a.method == "citrix_cloud":
        return CitrixCloudAuth(a.token_url.replace("{customer_id}", a.customer_id), a.customer_id,
                               a.client_id, a.client_secret, timeout=timeout, verify=verify)
    module = auth_library(a.method)
    if module is None:
        raise ConfigError("[auth]", [f"method \"{a.method}\": its Python package is not installed"])
    if a.method == "ntlm":
        return module.HttpNtlmAuth(a.username, a.password)
    if module.__name__ == "requests_negotiate_sspi":
        return module.HttpNegotiateAuth()
    if module.__name__ == "requests_gssapi":
        return module.HTTPSPNEGOAuth()
    return module.HTTPKerberosAuth()


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
        self.session = session or requests.Session()
        self._token: Optional[str] = None
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
        deadline = time.monotonic() + self.timeout
        try:
            resp = self.session.post(
                self.token_url, data={"grant_type": "client_credentials", "client_id": self._client_id,
                                      "client_secret": self._client_secret},
                headers=HEADERS, timeout=self.timeout, verify=self.verify, stream=True, allow_redirects=False)
        except requests.Timeout:
            raise PollError("auth", "the token request timed out") from None
        except requests.RequestException as e:
            raise PollError("auth", f"the token request failed: {type(e).__name__}") from None
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
        if isinstance(lifetime, str) and lifetime.isdigit():
            lifetime = int(lifetime)
        if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)) or not 0 < lifetime <= 86400 * 7:
            log.warning("the token answer's expires_in is unusable; renewing the token every 5 minutes")
            lifetime = 300 + TOKEN_MARGIN_SECONDS
        return token, float(lifetime)
