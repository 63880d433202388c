"""The server's front door, as one ASGI middleware: every request passes these checks in order.

1. Host header: while bound to loopback, only ``localhost``/``127.0.0.1``/``[::1]`` are accepted,
   which defeats DNS-rebinding pages in a local browser.
2. API key: with a key set, every path but ``/health`` needs ``Authorization: Bearer KEY``,
   compared in constant time (``hmac.compare_digest``).
3. Content type: POST bodies must be ``application/json``. Browsers cannot send that cross-site
   without a CORS preflight, which this server never grants, so a web page cannot make the local
   model generate.
4. Body size: larger bodies get 413 before the application parses anything.

Each request is logged once when its response ends (method, path, status, latency, token counts);
the content of prompts and answers is logged only with ``--log-content``.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from jmed_edge.serve.config import is_loopback
from jmed_edge.serve.protocol import error_body

access_log = logging.getLogger("jmed_edge.serve.access")

OPEN_PATHS = frozenset({"/health"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

Scope = dict[str, Any]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def send_json(send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    payload = json.dumps(body, ensure_ascii=False).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


@dataclass
class Refusal:
    status: int
    message: str
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


class Guard:
    """ASGI middleware applying the checks above and writing the access log."""

    def __init__(self, app, *, api_key: str | None, max_body_bytes: int, loopback_only: bool) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        state.setdefault("usage", None)
        status = 0

        async def send_and_record(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal = self._refuse(scope)
            if refusal is not None:
                body = error_body(refusal.message, "invalid_request_error", code=refusal.code)
                await send_json(send_and_record, refusal.status, body, refusal.headers)
                return
            if scope["method"] in BODY_METHODS:
                receive = await self._buffer_body(scope, receive, send_and_record)
                if receive is None:
                    return
            await self.app(scope, receive, send_and_record)
        except Exception:
            status = status or 500  # answered by Starlette's outermost error handler
            raise
        finally:
            self._log(scope, status, time.perf_counter() - started, state.get("usage"))

    def _refuse(self, scope: Scope) -> Refusal | None:
        host = _header(scope, b"host")
        if self.loopback_only and host is not None and not is_loopback(_strip_port(host)):
            return Refusal(400, f"host {host!r} is not served here; this server answers on loopback only")
        if self.api_key is not None and scope["path"] not in OPEN_PATHS:
            scheme, _, token = (_header(scope, b"authorization") or "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key):
                return Refusal(401, "missing or wrong API key; send the header Authorization: Bearer KEY",
                               "invalid_api_key", {"WWW-Authenticate": "Bearer"})  # fmt: skip
        if scope["method"] in BODY_METHODS:
            content_type = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
            if content_type != "application/json":
                return Refusal(415, "the body must be JSON sent with Content-Type: application/json, "
                                    f"not {content_type or 'none'!r}")  # fmt: skip
        return None

    async def _buffer_body(self, scope: Scope, receive, send):
        """Read the whole body (at most ``max_body_bytes``) and return a receive that replays it."""
        limit = self.max_body_bytes
        too_large = error_body(
            f"the request body is larger than this server's limit of {limit} bytes (--max-body-bytes)",
            "invalid_request_error",
            code="request_too_large",
        )
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await send_json(send, 413, too_large)
            return None
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > limit:
                await send_json(send, 413, too_large)
                return None
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # later calls wait for the client to disconnect

        return replay

    @staticmethod
    def _log(scope: Scope, status: int, seconds: float, use: dict[str, int] | None) -> None:
        client = scope.get("client") or ("-", 0)
        tokens = (
            f" prompt_tokens={use['prompt_tokens']} completion_tokens={use['completion_tokens']}"
            if use
            else ""
        )
        access_log.info('%s "%s %s" %d %.0f ms%s', client[0], scope["method"], scope["path"], status,
                        seconds * 1000, tokens)  # fmt: skip


def _strip_port(host: str) -> str:
    if host.startswith("["):  # [::1]:8000
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
