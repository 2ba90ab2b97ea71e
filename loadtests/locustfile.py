"""Realistic traffic for the release gate.

Records come from the held-out (test) period of the validated data, as clients would send them.
Three request types, named in Locust's statistics:
- `single`: one record (most traffic);
- `multi`: 50 records;
- `invalid`: a record that breaks the contract; it must be refused with a 4xx, which counts as a
  success; anything else (a 2xx or a 5xx) is a failure. The breakages come from the contract itself, as the
  service documents it (`/docs.json`): a value beyond a field's range, outside its closed set, of the wrong
  type, an impossible date, a required field left empty. No field of any dataset is named here.
"""

from __future__ import annotations

import json
import os
import random
import urllib.request
from pathlib import Path

import gevent
from locust import FastHttpUser, between, events, task

from tiffin.serving.openapi import record_schema
from tiffin.storage.settings import api_headers

RECORDS = json.loads(Path(os.environ.get("TIFFIN_LOADTEST_RECORDS", "reports/loadtest/records.json")).read_text())
HEADERS = api_headers()  # TIFFIN_API_TOKEN as a bearer token, if set
BREAKAGES: list[tuple[str, object]] = []


def breakages(schema: dict) -> list[tuple[str, object]]:
    """(field, value) pairs the contract must refuse, one kind of breakage per field."""
    found = []
    for name, field in schema["properties"].items():
        nullable = "anyOf" in field
        field = field["anyOf"][0] if nullable else field
        if "enum" in field:
            found.append((name, "<not in the closed set>"))
        elif "maximum" in field:
            found.append((name, field["maximum"] + 1000))
        elif field.get("type") in ("integer", "number"):
            found.append((name, "not a number"))
        elif field.get("format") in ("date", "date-time"):
            found.append((name, "2012-02-30"))
        if name in schema.get("required", []) and not nullable:
            found.append((name, None))
    return found


@events.init.add_listener
def fresh_loop_clock(**_: object) -> None:
    """gevent's loop caches its clock, and after a slow start (the imports, on a loaded machine) Locust sets its
    `--run-time` timer from a stale one: seen here, a 6 s limit reached 33 ms after it was set, no request sent."""
    gevent.get_hub().loop.update_now()


@events.test_start.add_listener
def learn_the_contract(environment, **_: object) -> None:
    """Read the contract from the service under test, before the first request."""
    request = urllib.request.Request(f"{environment.host}/docs.json", headers=HEADERS)
    with urllib.request.urlopen(request, timeout=30) as response:
        schema = record_schema(json.loads(response.read()))
    if schema is None or not (found := breakages(schema)):
        raise RuntimeError(f"{environment.host}/docs.json documents no record schema to break")
    BREAKAGES.extend(found)


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
