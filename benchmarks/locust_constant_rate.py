"""Locust at a constant offered load: each user sends RATE_PER_USER requests a second."""

import os

import gevent
from locust import FastHttpUser, constant_throughput, events, task

BODY = open(os.environ["BODY_FILE"], "rb").read()  # noqa: SIM115  (read once, at start)


@events.init.add_listener
def fresh_loop_clock(**_: object) -> None:
    gevent.get_hub().loop.update_now()  # else --run-time counts from a stale clock (loadtests/locustfile.py)


class Client(FastHttpUser):
    wait_time = constant_throughput(float(os.environ.get("RATE_PER_USER", "5")))

    @task
    def predict(self) -> None:
        self.client.post("/predict", data=BODY, headers={"Content-Type": "application/json"})
