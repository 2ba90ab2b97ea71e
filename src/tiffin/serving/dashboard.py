"""The service's monitoring page: the latest `tiffin monitor` dashboard at /dashboard/, its figures in /metrics.

Files are read on every request, so a monitoring run shows up without restarting the service. The
folder is `$TIFFIN_REPORTS_DIR` (default `reports/monitor`, where `tiffin monitor` writes), file
`latest/index.html`. BentoML serves /metrics from prometheus_client's multiprocess files, where a
custom collector in a worker is never asked; so a middleware appends the run's own Prometheus text
(`latest/metrics.prom`) to the response instead: the gauges are as fresh as the last run, on every scrape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tiffin.serving.asgi import rewriting_send
from tiffin.storage import settings

MOUNT_PATH = "/dashboard"
_NONE_YET = "no monitoring dashboard yet: run `tiffin monitor --start ... --end ...` (it writes {where})"


def reports_dir() -> Path:
    """`TIFFIN_REPORTS_DIR`, else the monitoring reports' folder, as configured (relative unless set absolute)."""
    return Path(settings.env("TIFFIN_REPORTS_DIR"))


def latest_dir() -> Path:
    return reports_dir() / "latest"


def _missing(request: Request, path: Path) -> Response:
    # The folder as configured: a response never shows where the server lives.
    message = _NONE_YET.format(where=f"{reports_dir()}/latest/{path.name}")
    if "text/html" in request.headers.get("accept", ""):
        return HTMLResponse(f"<!doctype html><title>No dashboard</title><p>{message}</p>", status_code=404)
    return JSONResponse({"error": message}, status_code=404)


def _serve(name: str, media_type: str) -> Any:
    async def endpoint(request: Request) -> Response:
        path = latest_dir() / name
        if not path.is_file():
            return _missing(request, path)
        # Each run replaces the file: never let a browser or proxy keep an old one.
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "no-store"})

    return endpoint


app = Starlette(
    routes=[
        Route("/", _serve("index.html", "text/html; charset=utf-8")),
        Route("/metrics.json", _serve("metrics.json", "application/json")),
        Route("/metrics.prom", _serve("metrics.prom", "text/plain; version=0.0.4; charset=utf-8")),
    ]
)


ROUTES = [MOUNT_PATH, *(MOUNT_PATH + route.path for route in app.routes)]  # what /metrics may label by path


def latest_metrics_text() -> bytes:
    """The latest run's gauges in Prometheus text format; empty when there is none."""
    path = latest_dir() / "metrics.prom"
    try:
        return path.read_bytes()
    except OSError:
        return b""


class MonitorMetrics:
    """ASGI middleware: GET /metrics gets the latest monitoring gauges appended to BentoML's own."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/metrics" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, rewriting_send(send, _with_monitor_gauges))


def _with_monitor_gauges(body: bytes, headers: list) -> bytes:
    addition = latest_metrics_text()
    if not addition or any(k.lower() == b"content-encoding" for k, _ in headers):
        return body
    return body + (b"" if body.endswith(b"\n") or not body else b"\n") + addition


def mount(service: Any) -> None:
    """Serve the dashboard at /dashboard/ and the monitoring gauges in /metrics of a BentoML service."""
    service.mount_asgi_app(app, path=MOUNT_PATH, name="dashboard")
    service.add_asgi_middleware(MonitorMetrics)
