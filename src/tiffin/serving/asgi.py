"""Plain ASGI around the BentoML app: bearer-token auth and a body-size limit before BentoML reads the body,
and a `send` that rewrites a response (the OpenAPI document, the monitoring gauges in /metrics)."""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any

from tiffin.serving.config import ServiceConfig
from tiffin.serving.openapi import OPEN_PATHS, describing_errors

MOUNTED = ("/dashboard", "/ui")  # apps mounted beside the API (the dashboard, the web interface)


class GuardMiddleware:
    """Bearer-token auth (when TIFFIN_API_TOKEN is set), the worker's concurrency limit and a body-size limit,
    as plain ASGI, before BentoML reads the body."""

    def __init__(self, app: Any, config: ServiceConfig) -> None:
        self.app = app
        self.config = config
        self.token = config.api_token.encode() if config.api_token else None  # encoded once, compared per request
        self.in_flight = 0  # requests of this worker being read, queued or scored (one event loop: no lock)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == "/docs.json":
            await self.app(scope, receive, rewriting_send(send, describing_errors))
            return
        if path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.token and not self._authorised(headers.get(b"authorization", b"")):
            await _respond(send, 401, {"error": "missing or wrong bearer token"}, [(b"www-authenticate", b"Bearer")])
            return
        if path in MOUNTED:  # Starlette's own redirect would name the Host header's host: stay relative
            await _respond(send, 307, {"error": f"see {path}/"}, [(b"location", f"{path}/".encode())])
            return
        if self.in_flight >= self.config.max_concurrency:
            # Full: say so at once (a queue would only turn load into latency and time-outs).
            body = {"error": f"busy: {self.in_flight} requests in progress on this worker (TIFFIN_MAX_CONCURRENCY)"}
            await _respond(send, 429, body, [(b"retry-after", b"1")])
            return
        self.in_flight += 1
        try:
            await self._guarded(scope, headers, receive, send)
        finally:
            self.in_flight -= 1

    async def _guarded(self, scope: dict, headers: dict, receive: Any, send: Any) -> None:
        if scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        media_type = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
        if media_type != b"application/json":  # BentoML would try other parsers, and 500 on some
            body = {"error": f"send JSON (Content-Type: application/json), not {media_type.decode(errors='replace')!r}"}
            await _respond(send, 415, body)
            return
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.config.max_body_bytes:
            await _respond(send, 413, self._too_large(int(length)))
            return
        if length is None:  # chunked: read it here, up to the limit, then hand it on
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if len(body) > self.config.max_body_bytes:
                    await _respond(send, 413, self._too_large(len(body)))
                    return
                if not message.get("more_body"):
                    break
            receive = _replay(body)
        await self.app(scope, receive, send)

    def _authorised(self, header: bytes) -> bool:
        scheme, _, credentials = header.strip().partition(b" ")
        # The scheme is case-insensitive (RFC 9110 11.1); the token is compared in constant time.
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.token)

    def _too_large(self, size: int) -> dict[str, Any]:
        limit = self.config.max_body_bytes
        return {"error": f"body of {size} bytes is over the limit of {limit} (TIFFIN_MAX_BODY_BYTES)", "detail": []}


def rewriting_send(send: Any, rewrite: Callable[[bytes, list], bytes]) -> Any:
    """An ASGI `send` that buffers a 200 response, rewrites its body (given the headers) and sends it
    with the new length."""
    start: dict = {}
    body = b""

    async def rewritten(message: dict) -> None:
        nonlocal start, body
        if message["type"] == "http.response.start":
            start = message
            return
        body += message.get("body", b"")
        if message.get("more_body"):
            return
        headers = start.get("headers", [])
        if start.get("status") == 200:
            body = rewrite(body, headers)
        headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return rewritten


def _replay(body: bytes) -> Any:
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _respond(send: Any, status: int, body: dict, headers: list | None = None) -> None:
    payload = json.dumps({"detail": [], **body}).encode()  # every error body has the same two keys
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
            + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": payload})
