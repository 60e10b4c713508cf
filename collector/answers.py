"""What the collector's handlers take and give: requests, answers, routes and refusals.

Shared by the handlers (`collector.ingest`, `collector.pages`, `collector.scrape`),
the API that routes between them (`collector.server`) and the transport
(`collector.httpserver`), which builds a `Request` from the bytes it read and
writes out the `Response` it is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Union

from collector.auth import AuthError
from contract.report import Problem

JSON_TYPE = "application/json"


@dataclass
class Request:
    method: str
    path: str
    headers: Dict[str, str] = field(default_factory=dict)  # names lower-cased
    body: bytes = b""

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


@dataclass
class Response:
    status: int
    body: Union[bytes, List[bytes]] = b""  # a list is written part by part, never joined
    content_type: str = JSON_TYPE
    headers: Dict[str, str] = field(default_factory=dict)

    def payload(self) -> bytes:
        """The whole body as one bytes object: for small answers the transport writes in one go
        (a refusal at the connection caps), and for tests."""
        return b"".join(self.body) if isinstance(self.body, list) else self.body


@dataclass(frozen=True)
class Route:
    """Where a request goes: its answer, whether it needs scrape credentials, whether it renders in a thread."""

    answer: Callable[[], Response]
    protected: bool = False
    slow: bool = False  # rendering takes long enough to run off the event loop (every host is read)


class Rejected(Exception):
    """A refused report (or request): the status, the reason (contract/rejections.py) and the problems."""

    def __init__(self, status: int, reason: str, message: str, problems: Optional[List[Problem]] = None,
                 omitted: int = 0, headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.problems = problems or [Problem("", reason, message)]
        self.omitted = omitted  # problems found beyond the ones listed
        self.headers = headers or {}

    def response(self) -> Response:
        """The answer every refusal of a report gets: the reason, a message and each problem."""
        answer: Dict[str, Any] = {"error": self.message, "reason": self.reason,
                                  "problems": [p.as_dict() for p in self.problems]}
        if self.omitted:
            answer["problems_omitted"] = self.omitted
        return json_response(self.status, answer, self.headers)


def json_response(status: int, doc: Any, headers: Optional[Dict[str, str]] = None) -> Response:
    return Response(status, json.dumps(doc, ensure_ascii=False).encode("utf-8") + b"\n",
                    headers=headers or {})


def auth_refusal(e: AuthError) -> Response:
    """401 with a challenge; 503 with Retry-After when password checks are saturated."""
    headers = {"WWW-Authenticate": 'Basic realm="vdiwatch", charset="UTF-8"'} if e.status == 401 \
        else {"Retry-After": "1"}
    return json_response(e.status, {"error": e.message, "reason": e.reason}, headers)
