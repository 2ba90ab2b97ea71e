"""The time-out that replaces BentoML's: the same 504, and no timer left behind by an answered request."""

from __future__ import annotations

import asyncio
import json

from bentoml._internal.server.http.traffic import TimeoutMiddleware

from tiffin.serving.bentoml_fixes import PromptTimeout


async def quick(scope: dict, receive: object, send: object) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def slow(scope: dict, receive: object, send: object) -> None:
    await asyncio.sleep(5)
    await quick(scope, receive, send)


def call(middleware: object) -> tuple[list[dict], int]:
    """One request through `middleware`: what it sent, and the live timers it left on the loop."""

    async def run() -> tuple[list[dict], int]:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        await middleware({"type": "http", "path": "/predict"}, None, send)
        live = [handle for handle in asyncio.get_running_loop()._scheduled if not handle.cancelled()]
        return sent, len(live)

    return asyncio.run(run())


def test_an_answered_request_leaves_no_timer_where_bentomls_leaves_one() -> None:
    assert call(TimeoutMiddleware(quick, timeout=60))[1] == 1  # alive for 60 s, with its future: the GC walks it
    sent, live = call(PromptTimeout(quick, timeout=60))
    assert live == 0 and sent[0]["status"] == 200 and sent[1]["body"] == b"ok"


def test_no_answer_within_the_timeout_is_a_504() -> None:
    sent, _ = call(PromptTimeout(slow, timeout=0.1))
    assert sent[0]["status"] == 504
    assert "not answered within 0.1 s" in json.loads(sent[1]["body"])["error"]
