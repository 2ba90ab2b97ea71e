"""Overload traffic: single-record requests at a fixed offered rate, named by how they were answered.

`accepted` (200), `shed` (429 or 503: refused at once, to retry later) and `other` (anything else, a
failure). Each user sends TIFFIN_OVERLOAD_RATE requests a second, whatever the answers: an open load that
does not slow down when the service does (`tiffin.jobs.overload`).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from locust import FastHttpUser, constant, constant_throughput, task

from tiffin.storage.settings import api_headers

RECORDS = json.loads(Path(os.environ["TIFFIN_LOADTEST_RECORDS"]).read_text())
RATE = float(os.environ.get("TIFFIN_OVERLOAD_RATE", "0"))  # requests/s per user; 0: as fast as answered
HEADERS = api_headers()  # TIFFIN_API_TOKEN as a bearer token, if set
NAMES = {200: "accepted", 429: "shed", 503: "shed"}


class Client(FastHttpUser):
    wait_time = constant_throughput(RATE) if RATE > 0 else constant(0)
    network_timeout = 30.0
    connection_timeout = 30.0

    @task
    def predict(self) -> None:
        body = {"rows": [random.choice(RECORDS)]}
        with self.client.post("/predict", json=body, headers=HEADERS, name="request", catch_response=True) as answer:
            answer.request_meta["name"] = NAMES.get(answer.status_code, "other")
            if answer.status_code in NAMES:
                answer.success()
            else:
                answer.failure(f"{answer.status_code}: {(answer.text or '')[:200]}")
