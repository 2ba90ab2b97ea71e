"""The service past its capacity: measured capacity, then four times that offered, for a bounded time.

A service that is full must say so at once (a 429 with `Retry-After`) and keep answering what it accepts
within its time-out, with memory that stays flat; a queue that grows only turns load into time-outs. The
capacity is what the service answers with 200 under a closed load that keeps every worker busy; the overload
offers `factor` times that rate, open (users keep their pace whatever the answers), with Locust.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tiffin.jobs.loadtest import GateConfig, locust_number, run_locust
from tiffin.serving.server import BentoServer
from tiffin.storage import settings

LOCUSTFILE = Path(__file__).resolve().parents[3] / "loadtests/overload.py"


@dataclass(frozen=True)
class OverloadResult:
    capacity_per_s: float  # 200s a second under a closed load (`capacity_users` users, no wait)
    offered_per_s: float  # factor x capacity, asked of Locust
    achieved_per_s: float  # what Locust sent
    answers: int
    accepted_share: float
    shed_share: float
    other: int  # neither 200 nor 429/503: errors, time-outs, other statuses
    accepted_p50_ms: float
    accepted_p99_ms: float
    accepted_max_ms: float
    shed_p99_ms: float
    probe: dict[str, float]  # what a client that is not itself overloaded saw meanwhile (`Probe`)
    worker_rss_mib_before: list[float]
    worker_rss_mib_after: list[float]

    def table(self) -> str:
        rows = [
            ("capacity (200s/s, closed load)", f"{self.capacity_per_s:,.0f}"),
            ("offered / sent, requests/s", f"{self.offered_per_s:,.0f} / {self.achieved_per_s:,.0f}"),
            ("answers: accepted / shed / other", f"{self.accepted_share:.1%} / {self.shed_share:.1%} / {self.other}"),
            (
                "p50 / p99 / max accepted, ms",
                f"{self.accepted_p50_ms:g} / {self.accepted_p99_ms:g} / {self.accepted_max_ms:.0f}",
            ),
            ("p99 shed (429), ms: Locust / probe", f"{self.shed_p99_ms:g} / {self.probe['shed_p99_ms']:g}"),
            ("p99 accepted, ms: probe", f"{self.probe['accepted_p99_ms']:g}"),
            (
                "worker RSS before / after, MiB",
                f"{_mib(self.worker_rss_mib_before)} / {_mib(self.worker_rss_mib_after)}",
            ),
        ]
        return "| overload | |\n|---|---|\n" + "\n".join(f"| {name} | {value} |" for name, value in rows) + "\n"


def _mib(sizes: list[float]) -> str:
    return "/".join(f"{size:.0f}" for size in sizes)


def overload(server: BentoServer, records: Path, out: Path, *, factor: float = 4.0, seconds: float = 20,
             capacity_users: int = 16, users: int = 128) -> OverloadResult:  # fmt: skip
    """Measure the capacity of a running server, then offer `factor` times it for `seconds`."""
    out.mkdir(parents=True, exist_ok=True)
    closed = GateConfig(users=capacity_users, spawn_rate=capacity_users, warmup_seconds=0, run_seconds=8, objectives={})
    capacity = _stat(run_locust(server.url, closed, LOCUSTFILE, records, out / "capacity"), "accepted", "Requests/s")
    before = server.worker_rss_mib()
    offered = factor * capacity
    # Users start over a second and a half, not in lock-step (which would offer bursts, not a rate).
    config = GateConfig(users=users, spawn_rate=max(1, int(users / 1.5)), warmup_seconds=0, run_seconds=seconds,
                        objectives={})  # fmt: skip
    with Probe(server.url, json.loads(records.read_text())[0]) as probe:
        rate = {"TIFFIN_OVERLOAD_RATE": str(offered / users)}
        stats = run_locust(server.url, config, LOCUSTFILE, records, out / "overload", rate)
    after = server.worker_rss_mib()
    total = int(stats["Aggregated"]["Request Count"])
    count = {name: int(stats.get(name, {}).get("Request Count", 0)) for name in ("accepted", "shed", "other")}
    result = OverloadResult(
        capacity_per_s=round(capacity, 1),
        offered_per_s=round(offered, 1),
        achieved_per_s=round(float(stats["Aggregated"]["Requests/s"]), 1),
        answers=total,
        accepted_share=round(count["accepted"] / max(total, 1), 4),
        shed_share=round(count["shed"] / max(total, 1), 4),
        other=total - count["accepted"] - count["shed"],
        accepted_p50_ms=_stat(stats, "accepted", "50%"),
        accepted_p99_ms=_stat(stats, "accepted", "99%"),
        accepted_max_ms=_stat(stats, "accepted", "Max Response Time"),
        shed_p99_ms=_stat(stats, "shed", "99%"),
        probe=probe.summary(),
        worker_rss_mib_before=[round(size, 1) for size in before],
        worker_rss_mib_after=[round(size, 1) for size in after],
    )
    (out / "overload.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


class Probe:
    """One request every `interval` seconds on its own thread and connection while the load runs: latencies as a
    client sees them that is not itself short of CPU (Locust, beside the server on the same cores, is)."""

    def __init__(self, url: str, record: dict, interval: float = 0.02) -> None:
        self.address = urllib.parse.urlsplit(url)
        self.body = json.dumps({"rows": [record]})
        self.interval = interval
        self.seen: list[tuple[int, float]] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Probe:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.thread.join()

    def _run(self) -> None:
        connection = http.client.HTTPConnection(self.address.hostname, self.address.port, timeout=30)
        headers = {**settings.api_headers(), "Connection": "keep-alive"}
        while not self.stopped.wait(self.interval):
            began = time.perf_counter()
            try:
                connection.request("POST", "/predict", self.body, headers)
                answer = connection.getresponse()
                answer.read()
                self.seen.append((answer.status, (time.perf_counter() - began) * 1000))
            except OSError:
                self.seen.append((0, (time.perf_counter() - began) * 1000))
                connection.close()
        connection.close()

    def summary(self) -> dict[str, float]:
        def p99(statuses: tuple[int, ...]) -> float:
            times = [ms for status, ms in self.seen if status in statuses]
            return round(float(np.percentile(times, 99)), 1) if times else 0.0

        return {"requests": len(self.seen), "shed": sum(s in (429, 503) for s, _ in self.seen),
                "other": sum(s not in (200, 429, 503) for s, _ in self.seen),
                "shed_p99_ms": p99((429, 503)), "accepted_p99_ms": p99((200,))}  # fmt: skip


def _stat(stats: dict[str, dict], name: str, column: str) -> float:
    """A figure of one request name in Locust's statistics; 0 where that name saw no requests."""
    return locust_number(stats.get(name, {}).get(column), missing=0.0)
