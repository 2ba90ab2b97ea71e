"""Two corrections to BentoML 1.4's own ASGI middlewares, installed in a worker before its app is built.

Both sit outside anything a service can add (`add_asgi_middleware` comes after them), so the classes that
BentoML looks up as it builds the app are swapped, in this process only:

- Request metrics are labelled with the raw path: each unknown path adds series to every worker for good
  (2,000 random paths grew /metrics from 175 KB to 7.7 MB; NUL bytes from a URL became label values).
  `BoundedLabels` shows the metrics a routed path or `<other>`.
- The time-out schedules a timer per request that lives for the whole time-out (60 s by default) even after
  the answer, holding a future each: at 1,000 requests/s, tens of thousands of objects that every full
  garbage collection walks, stalling the worker for 100 ms and more (p99 of a no-op BentoML service at one
  connection: 200-300 ms). `PromptTimeout` gives the same 504 and drops its timer with the answer.

`tests/service/test_api.py` checks both on a real server, so a BentoML release that moves them is noticed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import JSONResponse

OTHER_PATHS = "<other>"  # the one endpoint label of every path the service does not route


def install(routes: list[str]) -> None:
    """Swap in `BoundedLabels` (knowing `routes`) and `PromptTimeout`; call before BentoML builds the app."""
    from bentoml._internal.server.http import traffic

    traffic.TimeoutMiddleware = PromptTimeout
    bound_endpoint_labels(routes)


def bound_endpoint_labels(routes: list[str]) -> None:
    """BentoML's request metrics label unrouted paths as one `<other>` endpoint; the app still sees the path."""
    from bentoml._internal.server.http import instruments

    original = getattr(instruments.RunnerTrafficMetricsMiddleware, "__tiffin_original__", None)
    base = original or instruments.RunnerTrafficMetricsMiddleware
    known = frozenset(["/", *routes])

    class BoundedLabels(base):  # type: ignore[misc, valid-type]
        __tiffin_original__ = base

        def __init__(self, app: Any, **options: Any) -> None:
            super().__init__(_AsRequested(app), **options)

        async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"] not in known:
                scope = {**scope, "path": OTHER_PATHS, "tiffin.path": scope["path"]}
            await super().__call__(scope, receive, send)

    instruments.RunnerTrafficMetricsMiddleware = BoundedLabels


class _AsRequested:
    """Restore the path that `BoundedLabels` hid from the metrics, for routing."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if "tiffin.path" in scope:
            scope = {**scope, "path": scope["tiffin.path"]}
        await self.app(scope, receive, send)


class PromptTimeout:
    """BentoML's TimeoutMiddleware (a 504 when no answer has started within `timeout` seconds), without a timer
    that outlives the request."""

    def __init__(self, app: Any, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: dict) -> None:
            nonlocal started
            started = True
            await send(message)

        answer = asyncio.ensure_future(self.app(scope, receive, tracked))
        await asyncio.wait({answer}, timeout=self.timeout)  # its timer is cancelled as soon as `answer` is done
        if not answer.done() and not started:
            answer.cancel()  # a scoring thread cannot be stopped: it finishes, and its answer is dropped
            message = f"not answered within {self.timeout:g} s (TIFFIN_TIMEOUT_SECONDS)"
            await JSONResponse({"error": message, "detail": []}, status_code=504)(scope, receive, send)
            return
        await answer
