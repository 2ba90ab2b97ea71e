"""Realistic traffic for the release gate.

Records come from the held-out (test) period of the validated data, as clients would send them.
Three request types, named in Locust's statistics:
- `single`: one record (most traffic);
- `multi`: 50 records;
- `invalid`: a record that breaks the contract; it must be refused with a 4xx, which counts as a
  success; anything else (a 2xx or a 5xx) is a failure.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from locust import FastHttpUser, between, task

RECORDS = json.loads(Path(os.environ.get("TIFFIN_LOADTEST_RECORDS", "reports/loadtest/records.json")).read_text())
BREAKAGES = [("hr", 77), ("temp", "warm"), ("weathersit", "Sunny"), ("dteday", "2012-02-30"), ("season", None)]
HEADERS = {"Content-Type": "application/json"}
if token := os.environ.get("TIFFIN_API_TOKEN"):
    HEADERS["Authorization"] = f"Bearer {token}"


class Client(FastHttpUser):
    wait_time = between(0.01, 0.05)

    @task(20)
    def single(self) -> None:
        self._predict("single", [random.choice(RECORDS)])

    @task(3)
    def multi(self) -> None:
        self._predict("multi", random.sample(RECORDS, 50))

    @task(1)
    def invalid(self) -> None:
        field, value = random.choice(BREAKAGES)
        record = {**random.choice(RECORDS), field: value}
        with self.client.post("/predict", json={"rows": [record]}, headers=HEADERS, name="invalid",
                              catch_response=True) as response:  # fmt: skip
            if 400 <= response.status_code < 500 and response.json().get("detail"):
                response.success()
            else:
                response.failure(f"invalid input answered {response.status_code}, not a 4xx with details")

    def _predict(self, name: str, rows: list[dict]) -> None:
        with self.client.post("/predict", json={"rows": rows}, headers=HEADERS, name=name,
                              catch_response=True) as response:  # fmt: skip
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
            elif len(response.json()["predictions"]) != len(rows):
                response.failure("not one prediction per row")
