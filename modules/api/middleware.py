"""ASGI middleware guarding the API paths: HTTP Basic auth, a request body size limit, A1111's ``X-Process-Time``;
and one guarding every path: the ``Host`` header allow-list.

It works on raw ASGI messages so that it runs before FastAPI reads or validates anything: an unauthenticated
request gets its 401 whatever its body, and an oversized body is refused without being buffered.
"""
from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from typing import Any, Awaitable, Callable, MutableMapping

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# The API's documentation describes every route: it is guarded with them.
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


class ApiRequestMiddleware:
    """For paths under ``prefix`` (and the API docs): 401 without valid credentials (when there are any), 413 for a body over
    ``max_body_bytes``, and an ``X-Process-Time`` header on every response.

    A declared ``Content-Length`` over the limit is refused before anything is read; a chunked body is counted as it
    arrives, and once it passes the limit whatever the route would have answered is replaced by the 413.
    """

    def __init__(self, app: ASGIApp, *, prefix: str, max_body_bytes: int,
                 credentials: list[tuple[str, str]] | None = None) -> None:
        self.app = app
        self.prefix = prefix
        self.max_body_bytes = max_body_bytes
        self.credentials = [(user.encode(), password.encode()) for user, password in credentials or []]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path.startswith(self.prefix) or path.rstrip("/") in DOCS_PATHS):
            await self.app(scope, receive, send)
            return
        if self.credentials and not self._authorized(_header(scope, b"authorization")):
            await _send_json(send, 401, "Incorrect username or password", [(b"www-authenticate", b"Basic")])
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(send)
            return
        await self._limited(scope, receive, send)

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        received = 0
        too_large = replaced = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def timed_send(message: Message) -> None:
            nonlocal replaced
            if too_large:
                if not replaced:
                    replaced = True
                    await self._too_large(send)
                return
            if message["type"] == "http.response.start":
                elapsed = f"{time.perf_counter() - started:.4f}".encode()
                message = {**message, "headers": [*message.get("headers", []), (b"x-process-time", elapsed)]}
            await send(message)

        await self.app(scope, counting_receive, timed_send)
        if too_large and not replaced:
            await self._too_large(send)

    def _authorized(self, header: str | None) -> bool:
        scheme, _, encoded = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        # Compare against every pair, without stopping early, in constant time per comparison.
        matches = [secrets.compare_digest(user, u) & secrets.compare_digest(password, p) for u, p in self.credentials]
        return bool(sep) and any(matches)

    async def _too_large(self, send: Send) -> None:
        await _send_json(send, 413, f"request body too large: the limit is {self.max_body_bytes} bytes")


class HostAllowListMiddleware:
    """400 for a request whose ``Host`` header is not one of ``allowed`` (names without the port; ``*.example.org``
    matches sub-domains). A DNS name rebound to 127.0.0.1 carries its own name, so a page on that name cannot reach
    the server; WebSocket handshakes are refused the same way."""

    def __init__(self, app: ASGIApp, *, allowed: list[str]) -> None:
        self.app = app
        self.exact = {h.lower() for h in allowed if not h.startswith("*.")}
        self.suffixes = tuple(h[1:].lower() for h in allowed if h.startswith("*."))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.allowed(_header(scope, b"host")):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await _send_json(send, 400, "Host header not allowed: start the server with --allowed-hosts naming this "
                                    "host to reach it under that name")

    def allowed(self, header: str | None) -> bool:
        host = _host_name(header or "")
        return bool(host) and (host in self.exact or host.endswith(self.suffixes))


def _host_name(header: str) -> str:
    """``Host`` header -> lower-case name without the port (``[::1]:7860`` -> ``::1``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


async def _send_json(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
