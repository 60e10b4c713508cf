"""A fake Monitor Service on 127.0.0.1: documented-shape pages (tests/fixtures/broker/),
server-driven paging with @odata.nextLink, NTLM and a stand-in Negotiate, a Citrix Cloud
token endpoint (POST), and the hostile answers a test asks for."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional

from tests.conftest import FIXTURES

PAGES = FIXTURES / "broker"
ODATA_PATH = "/Citrix/Monitor/OData/v4/Data"


def fixture_page(n: int) -> Dict[str, Any]:
    return json.loads((PAGES / f"machines-page{n}.json").read_text(encoding="utf-8"))


class FakeOData:
    """`behaviour(handler)` answers each GET; the default serves the two fixture pages."""

    def __init__(self) -> None:
        self.requests: List[Dict[str, Any]] = []
        self.behaviour: Callable[[BaseHTTPRequestHandler], None] = self.paged
        self.token_requests: List[bytes] = []
        self.token_behaviour: Callable[[BaseHTTPRequestHandler], None] = self.token
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                fake.requests.append({"path": self.path, "headers": dict(self.headers)})
                try:
                    fake.behaviour(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                fake.token_requests.append(self.rfile.read(length))
                try:
                    fake.token_behaviour(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *_a: None  # a client that hung up on purpose
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{ODATA_PATH}"

    def __enter__(self) -> "FakeOData":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- answers -------------------------------------------------------------

    @staticmethod
    def send(handler: BaseHTTPRequestHandler, status: int, body: bytes,
             content_type: str = "application/json; odata.metadata=minimal",
             length: Optional[int] = None, headers: Optional[Dict[str, str]] = None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("OData-Version", "4.0")
        handler.send_header("Content-Length", str(len(body) if length is None else length))
        handler.end_headers()
        handler.wfile.write(body)

    def send_json(self, handler: BaseHTTPRequestHandler, doc: Any, status: int = 200) -> None:
        self.send(handler, status, json.dumps(doc).encode())

    def token(self, handler: BaseHTTPRequestHandler, expires_in: Any = 3600) -> None:
        self.send_json(handler, {"access_token": "tok-123", "token_type": "bearer", "expires_in": expires_in})

    def paged(self, handler: BaseHTTPRequestHandler) -> None:
        """Page 1, whose next link (absolute, as OData v4 writes it) leads to page 2."""
        if "$skiptoken=2" in handler.path:
            self.send_json(handler, fixture_page(2))
            return
        doc = fixture_page(1)
        doc["@odata.nextLink"] = f"{self.url}/Machines?$skiptoken=2"
        self.send_json(handler, doc)

    def pages(self, docs: List[Any]) -> Callable[[BaseHTTPRequestHandler], None]:
        """Serve `docs` in turn by $skiptoken=<i>, linking each to the next."""
        def answer(handler: BaseHTTPRequestHandler) -> None:
            i = int(handler.path.split("$skiptoken=")[1]) if "$skiptoken=" in handler.path else 0
            doc = dict(docs[i])
            if i + 1 < len(docs):
                doc["@odata.nextLink"] = f"{self.url}/Machines?$skiptoken={i + 1}"
            self.send_json(handler, doc)
        return answer

    def status(self, code: int) -> Callable[[BaseHTTPRequestHandler], None]:
        return lambda h: self.send(h, code, b'{"error": {"message": "no"}}')

    def raw(self, body: bytes, length: Optional[int] = None,
            headers: Optional[Dict[str, str]] = None) -> Callable[[BaseHTTPRequestHandler], None]:
        return lambda h: self.send(h, 200, body, length=length, headers=headers)

    def chunked(self, handler: BaseHTTPRequestHandler) -> None:
        """Page 2 in chunked transfer encoding, as IIS sends a large answer."""
        body = json.dumps(fixture_page(2)).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json; odata.metadata=minimal")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for i in range(0, len(body), 100):
            part = body[i:i + 100]
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        handler.wfile.write(b"0\r\n\r\n")

    def drip(self, seconds_per_byte: float) -> Callable[[BaseHTTPRequestHandler], None]:
        """A valid page sent a byte at a time."""
        body = json.dumps(fixture_page(2)).encode()

        def answer(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            for i in range(len(body)):
                handler.wfile.write(body[i:i + 1])
                handler.wfile.flush()
                time.sleep(seconds_per_byte)
        return answer

    def endless(self, chunk: int = 65536) -> Callable[[BaseHTTPRequestHandler], None]:
        """A body that never ends, without Content-Length."""
        def answer(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.wfile.write(b'{"value": ["')
            for _ in range(100000):
                handler.wfile.write(b"x" * chunk)
        return answer

    # --- hostile answers of any status, for the authentication legs -----------

    @staticmethod
    def head(handler: BaseHTTPRequestHandler, status: int, headers: Dict[str, str], length: Optional[int] = None,
             close: bool = False) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        if length is not None:
            handler.send_header("Content-Length", str(length))
        if close:
            handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.flush()

    def endless_answer(self, status: int, headers: Dict[str, str],
                       total: int = 64 * 1024 * 1024) -> Callable[[BaseHTTPRequestHandler], None]:
        """`total` bytes (64 MiB: "endless" for a reader capped far below) without Content-Length."""
        def answer(handler: BaseHTTPRequestHandler) -> None:
            self.head(handler, status, headers, close=True)
            block = b"x" * 65536
            for _ in range(total // len(block)):
                handler.wfile.write(block)
        return answer

    def drip_answer(self, status: int, headers: Dict[str, str], seconds_per_byte: float = 0.5,
                    total: int = 100) -> Callable[[BaseHTTPRequestHandler], None]:
        """A body announced at `total` bytes, sent a byte every `seconds_per_byte`."""
        def answer(handler: BaseHTTPRequestHandler) -> None:
            self.head(handler, status, headers, length=total)
            for _ in range(total):
                handler.wfile.write(b"x")
                handler.wfile.flush()
                time.sleep(seconds_per_byte)
        return answer

    @staticmethod
    def drip_head(status: int = 401, seconds_per_byte: float = 0.5) -> Callable[[BaseHTTPRequestHandler], None]:
        """The status line, then a header sent a byte every `seconds_per_byte`, never finished."""
        def answer(handler: BaseHTTPRequestHandler) -> None:
            handler.wfile.write(b"HTTP/1.1 %d Nope\r\n" % status)
            for _ in range(1000):
                handler.wfile.write(b"X")
                handler.wfile.flush()
                time.sleep(seconds_per_byte)
        return answer

    @staticmethod
    def big_headers(status: int, name: str, size: int, count: int = 1) -> Callable[[BaseHTTPRequestHandler], None]:
        """`count` headers `name` of `size` bytes each (built now, so that a test measuring the
        reader's memory does not count the server's)."""
        line = b"%s: NTLM %s\r\n" % (name.encode(), b"A" * size)
        head = b"HTTP/1.1 %d No\r\n%sContent-Length: 0\r\n\r\n" % (status, line * count)

        def answer(handler: BaseHTTPRequestHandler) -> None:
            handler.wfile.write(head)
        return answer

    def ntlm(self, leg1: Optional[Callable[[BaseHTTPRequestHandler], None]] = None,
             leg2: Optional[Callable[[BaseHTTPRequestHandler], None]] = None,
             then: Optional[Callable[[BaseHTTPRequestHandler], None]] = None
             ) -> Callable[[BaseHTTPRequestHandler], None]:
        """NTLM as IIS speaks it, one handshake per connection (pyspnego's server; the test sets
        NTLM_USER_FILE): `leg1` answers the request without credentials, `leg2` the negotiate
        message (instead of the challenge), `then` the authenticated request (default: paged)."""
        import spnego

        def answer(handler: BaseHTTPRequestHandler) -> None:
            auth = handler.headers.get("Authorization", "")
            if not auth.startswith("NTLM "):
                (leg1 or (lambda h: self.send(h, 401, b"", headers={"WWW-Authenticate": "NTLM"})))(handler)
                return
            message = base64.b64decode(auth[5:])
            server = getattr(handler, "ntlm_server", None)
            if server is None:
                if leg2 is not None:
                    leg2(handler)
                    return
                server = handler.ntlm_server = spnego.server(protocol="ntlm")  # type: ignore[attr-defined]
                challenge = base64.b64encode(server.step(message)).decode()
                self.send(handler, 401, b"", headers={"WWW-Authenticate": f"NTLM {challenge}"})
                return
            server.step(message)
            handler.ntlm_server = None  # type: ignore[attr-defined]
            (then or self.paged)(handler)
        return answer

    def negotiate(self, leg1: Callable[[BaseHTTPRequestHandler], None]) -> Callable[[BaseHTTPRequestHandler], None]:
        """A stand-in for Negotiate: `leg1` without credentials, the pages with any."""
        def answer(handler: BaseHTTPRequestHandler) -> None:
            if handler.headers.get("Authorization", "").startswith("Negotiate "):
                self.paged(handler)
            else:
                leg1(handler)
        return answer
