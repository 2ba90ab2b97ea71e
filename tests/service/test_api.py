"""The real-time API on a real server: answers, bad input, limits, auth, health and metrics."""

from __future__ import annotations

import concurrent.futures
import json
import time
from pathlib import Path

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest

from tiffin.core.contract import Contract

from ..conftest import Project
from .conftest import as_served, serve

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def test_rows(reproduced_project: Project) -> pd.DataFrame:
    return pd.read_parquet(reproduced_project.path / "data/split/test.parquet")


@pytest.fixture(scope="module")
def pipeline(reproduced_project: Project):
    return joblib.load(reproduced_project.path / "models/model.joblib")


def as_records(frame: pd.DataFrame, columns: list[str]) -> list[dict]:
    """Canonical rows as a client would send them (JSON types, dates as text)."""
    return json.loads(frame[columns].to_json(orient="records", date_format="iso", date_unit="s"))


def predict(url: str, rows: list[dict], **kwargs) -> httpx.Response:
    return httpx.post(f"{url}/predict", json={"rows": rows}, timeout=30, **kwargs)


def test_one_record_is_predicted_as_the_pipeline_predicts_it(api, bike_spec, test_rows, pipeline) -> None:
    records = as_records(test_rows.head(1), bike_spec.input_columns)
    response = predict(api, records)
    assert response.status_code == 200
    body = response.json()
    assert body["model"].startswith("bike_demand:")
    np.testing.assert_allclose(body["predictions"], pipeline.predict(test_rows.head(1)), rtol=0, atol=1e-9)


def test_many_records_score_as_training_and_batch_code_score_them(
    api, bike_spec, test_rows, pipeline, served_history
) -> None:
    """The API, the DataFrame contract path (batch, training) and the pipeline agree to 1e-9; with history
    features, looked up by the service as training computed them."""
    records = as_records(test_rows, bike_spec.input_columns)
    served = predict(api, records).json()["predictions"]
    batch = Contract(bike_spec).validate(pd.DataFrame(records), serving=True)
    assert batch.rejects.empty
    np.testing.assert_allclose(served, pipeline.predict(as_served(served_history, batch.valid)), rtol=0, atol=1e-9)
    np.testing.assert_allclose(served, pipeline.predict(test_rows), rtol=0, atol=1e-9)


def test_nullable_fields_behave_as_in_training(api, bike_spec, test_rows) -> None:
    record = as_records(test_rows.head(1), bike_spec.input_columns)[0]
    without_weekday = {k: v for k, v in record.items() if k != "weekday"}
    null_weekday = {**record, "weekday": None}
    answers = [predict(api, [r]).json()["predictions"][0] for r in (record, without_weekday, null_weekday)]
    assert answers[0] == answers[1] == answers[2]


def test_an_int_is_accepted_as_a_float_and_an_integral_float_as_the_hour(api, bike_spec, test_rows) -> None:
    record = as_records(test_rows.head(1), bike_spec.input_columns)[0]
    record_as_ints = {**record, "temp": round(record["temp"]), "hr": float(record["hr"])}
    assert predict(api, [record_as_ints]).status_code == 200


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("hr", 77, "in_range(0, 23)"),
        ("hr", 7.5, "type: integer (hour_of_day)"),
        ("temp", "warm", "type: number"),
        ("weathersit", "Sunny", "isin(['Clear', 'Mist', 'Light Rain', 'Heavy Rain'])"),
        ("dteday", "2012-02-30", "type: date (YYYY-MM-DD)"),
        ("season", None, "not_nullable"),
        ("holiday", True, "isin(['No', 'Yes'])"),
        ("windspeed", {}, "type: number"),
        ("weathersit", ["Clear"], "isin(['Clear', 'Mist', 'Light Rain', 'Heavy Rain'])"),
    ],
)
def test_a_bad_value_is_a_400_naming_row_field_value_and_rule(api, bike_spec, test_rows, field, value, rule) -> None:
    records = as_records(test_rows.head(3), bike_spec.input_columns)
    records[2][field] = value
    response = predict(api, records)
    assert response.status_code == 400
    body = response.json()
    assert body["detail"] == [{"row": 2, "field": field, "value": str(value), "rule": rule}]
    assert body["error"] == "1 of 3 rows break the contract; nothing was predicted"


def test_every_problem_in_every_row_is_listed(api, bike_spec, test_rows) -> None:
    records = as_records(test_rows.head(4), bike_spec.input_columns)
    records[0]["hr"] = 24
    del records[3]["atemp"]
    records[3]["temp"] = "cold"
    problems = predict(api, records).json()["detail"]
    assert [(p["row"], p["field"], p["rule"]) for p in problems] == [
        (0, "hr", "in_range(0, 23)"),
        (3, "temp", "type: number"),
        (3, "atemp", "required: field is missing"),
    ]


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b'{"rows": [', 400, "validation error"),
        (b'{"rows": []}', 400, "`rows` is empty"),
        (b'{"rows": 5}', 400, "validation error"),
        (b'{"rows": ["a record"]}', 400, "validation error"),
        (b"{}", 400, "validation error"),
    ],
)
def test_malformed_requests_are_a_clear_4xx_object(api, body: bytes, status: int, error: str) -> None:
    response = httpx.post(f"{api}/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert error in response.json()["error"]


def test_a_body_that_is_not_json_is_a_415(api) -> None:
    for media_type in ("multipart/form-data", "text/plain", "application/x-www-form-urlencoded"):
        response = httpx.post(f"{api}/predict", content=b'{"rows": []}', headers={"content-type": media_type})
        assert response.status_code == 415 and "application/json" in response.json()["error"]
        assert response.json()["detail"] == []  # the one shape of every error body: error and detail


def test_more_rows_than_the_limit_is_a_400(api, bike_spec, test_rows) -> None:
    records = as_records(test_rows.head(1), bike_spec.input_columns) * 3001
    response = predict(api, records)
    assert response.status_code == 400 and "3001 rows is over the limit of 3000" in response.json()["error"]


def test_a_body_over_the_size_limit_is_a_413_before_it_is_parsed(api) -> None:
    body = b'{"rows": [' + b",".join([b'{"hr": 1, "note": "padding padding padding"}'] * 40_000) + b"]}"
    response = httpx.post(f"{api}/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "TIFFIN_MAX_BODY_BYTES" in response.json()["error"]


def test_health_readiness_and_docs(api) -> None:
    assert httpx.get(f"{api}/livez").status_code == 200
    assert httpx.get(f"{api}/readyz").status_code == 200
    schema = httpx.get(f"{api}/docs.json").json()
    request = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert request["additionalProperties"] is False  # another top-level key is a 400
    rows = request["properties"]["rows"]
    fields = rows["items"]["properties"]
    assert fields["hr"] == {
        "type": "integer",
        "minimum": 0,
        "maximum": 23,
        "description": fields["hr"]["description"],
        "examples": [8],
    }
    assert fields["weathersit"]["anyOf"][0]["enum"] == ["Clear", "Mist", "Light Rain", "Heavy Rain"]
    assert "cnt" not in fields and "casual" not in fields
    assert rows["examples"][0][0]["hr"] == 8


def test_metrics_count_predictions_rejections_and_values_with_the_model_tag(api, bike_spec, test_rows) -> None:
    records = as_records(test_rows.head(5), bike_spec.input_columns)
    tag = predict(api, records).json()["model"]
    predict(api, [{**records[0], "hr": 99}])
    metrics = httpx.get(f"{api}/metrics").text
    served = float(
        next(
            line.split()[-1]
            for line in metrics.splitlines()
            if line.startswith(f'tiffin_predictions_total{{model="{tag}"}}')
        )
    )
    assert served >= 5
    assert 'tiffin_rejected_rows_total{field="hr",rule="in_range(0, 23)"}' in metrics
    assert f'tiffin_prediction_value_bucket{{le="+Inf",model="{tag}"}}' in metrics
    assert f'tiffin_model_info{{model="{tag}"}} 1.0' in metrics
    assert 'bentoml_service_request_total{endpoint="/predict",http_response_code="400"' in metrics


def test_with_a_token_predict_needs_it_and_health_and_metrics_stay_open(guarded_api, bike_spec, test_rows) -> None:
    records = as_records(test_rows.head(1), bike_spec.input_columns)
    refused = predict(guarded_api, records)
    assert refused.status_code == 401 and refused.json() == {"detail": [], "error": "missing or wrong bearer token"}
    assert predict(guarded_api, records, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert predict(guarded_api, records, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    for path in ("/livez", "/readyz", "/metrics", "/docs.json"):
        assert httpx.get(f"{guarded_api}{path}").status_code == 200


def test_past_its_concurrency_the_service_answers_429_with_retry_after(guarded_api, bike_spec, test_rows) -> None:
    records = as_records(test_rows, bike_spec.input_columns) * 3  # a few milliseconds each
    auth = {"Authorization": "Bearer s3cret"}
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: predict(guarded_api, records, headers=auth), range(32)))
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {200, 429} and statuses.count(429) > 0 and statuses.count(200) > 0
    shed = next(answer for answer in answers if answer.status_code == 429)
    assert shed.headers["retry-after"] == "1" and "TIFFIN_MAX_CONCURRENCY" in shed.json()["error"]


# -- issue 13: hostile input and overload, on a real server ----------------------------------------------------


def test_another_top_level_key_is_a_400_naming_it(api, bike_spec, test_rows) -> None:
    records = as_records(test_rows.head(1), bike_spec.input_columns)
    response = httpx.post(f"{api}/predict", json={"rows": records, "model": "other"}, timeout=30)
    assert response.status_code == 400
    assert (
        response.json()["detail"][0]["loc"] == ["model"] and response.json()["detail"][0]["type"] == "extra_forbidden"
    )


@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        ({"dteday": "2012"}, "dteday", "type: date (YYYY-MM-DD)"),
        ({"dteday": 20120601}, "dteday", "type: date (YYYY-MM-DD)"),
        ({"weekday": "NOT_THE_DAY"}, "weekday", "agrees_with: weekday_name(dteday)"),
        ({"temperature": 21}, "temperature", "unknown field"),
        ({"temp": 10**400}, "temp", "type: number"),
    ],
)
def test_what_was_scored_wrongly_is_a_400_naming_field_and_rule(api, bike_spec, test_rows, change, field, rule) -> None:
    record = as_records(test_rows.head(1), bike_spec.input_columns)[0]
    if change.get("weekday") == "NOT_THE_DAY":  # any weekday but the date's own
        change = {"weekday": next(d for d in ("Mon", "Tue") if d != record["weekday"])}
    response = predict(api, [{**record, **change}])
    assert response.status_code == 400
    [problem] = response.json()["detail"]
    assert problem["field"] == field and problem["rule"].startswith(rule)


def test_a_huge_bad_value_is_echoed_cut_and_marked(api, bike_spec, test_rows) -> None:
    record = as_records(test_rows.head(1), bike_spec.input_columns)[0]
    response = predict(api, [{**record, "temp": "x" * 1_000_000}])
    assert response.status_code == 400 and len(response.content) < 1_000
    assert response.json()["detail"][0]["value"].endswith("… (cut: 1,000,000 characters)")


def test_a_request_that_cannot_be_parsed_logs_one_line(api_server) -> None:
    before = api_server.log.read_text(errors="replace").count("\n")
    response = httpx.post(f"{api_server.url}/predict", content=b'{"rows": [{"secret": "abc', timeout=30,
                          headers={"content-type": "application/json"})  # fmt: skip
    assert response.status_code == 400
    time.sleep(0.5)  # the log is written by the worker, then flushed by the arbiter
    added = api_server.log.read_text(errors="replace").splitlines()[before:]
    refused = [line for line in added if "/predict" in line]
    assert len(refused) == 1 and "json_invalid" in refused[0] and "secret" not in "\n".join(added)
    assert "Traceback" not in "\n".join(added)


def test_unknown_paths_share_one_metrics_label(api) -> None:
    def series() -> list[str]:
        return [line for line in httpx.get(f"{api}/metrics").text.splitlines() if not line.startswith("#")]

    for number in range(50):
        httpx.get(f"{api}/probe-{number}%00%ff")
    after_some = series()
    for number in range(50, 250):
        httpx.get(f"{api}/probe-{number}%00%ff")
    after_more = series()
    assert len(after_more) == len(after_some)  # no new series from new paths
    assert not any("probe-" in line for line in after_more)
    assert any('endpoint="<other>",http_response_code="404"' in line for line in after_more)


def test_with_a_token_everything_but_health_metrics_and_documents_needs_it(guarded_api) -> None:
    for path in ("/", "/dashboard/", "/dashboard/metrics.json", "/dashboard", "/ui/", "/ui/models", "/ui"):
        assert httpx.get(f"{guarded_api}{path}").status_code == 401, path
    answer = httpx.get(f"{guarded_api}/ui/models", headers={"Authorization": "Bearer s3cret"})
    assert answer.status_code == 200 and "text/html" in answer.headers["content-type"]
    for scheme in ("Bearer", "bearer", "BEARER"):
        answer = httpx.get(f"{guarded_api}/dashboard/", headers={"Authorization": f"{scheme} s3cret"})
        assert answer.status_code == 404 and "/work" not in answer.text and str(Path.home()) not in answer.text
        assert "reports/monitor/latest/index.html" in answer.json()["error"]
    redirect = httpx.get(f"{guarded_api}/dashboard", headers={"Authorization": "bearer s3cret", "Host": "evil.example"})
    assert redirect.status_code == 307 and redirect.headers["location"] == "/dashboard/"


def test_a_second_instance_on_the_same_store_leaves_the_first_ones_metrics(
    reproduced_project: Project, tmp_path: Path, api: str, bike_spec, test_rows
) -> None:
    """`bentoml serve` empties $BENTOML_HOME/prometheus_multiproc_dir; `tiffin serve` counts in a folder of its own."""
    records = as_records(test_rows.head(3), bike_spec.input_columns)
    predict(api, records)

    def served() -> float:
        lines = httpx.get(f"{api}/metrics").text.splitlines()
        return sum(float(line.split()[-1]) for line in lines if line.startswith("tiffin_predictions_total{"))

    before = served()
    second = serve(reproduced_project, tmp_path)
    try:
        assert predict(second.url, records).status_code == 200
        assert served() >= before > 0
    finally:
        second.stop()
    assert served() >= before


def test_the_bento_serves_the_web_interface_at_ui(api, reproduced_project: Project) -> None:
    tag = reproduced_project.read_json("models/registration.json")["tag"]
    assert httpx.get(f"{api}/ui", headers={"Host": "evil.example"}).headers["location"] == "/ui/"
    home = httpx.get(f"{api}/ui/")
    assert home.status_code == 200 and 'href="/ui/models"' in home.text
    assert tag in httpx.get(f"{api}/ui/models").text  # the model store the service reads
    model = httpx.get(f"{api}/ui/models/{tag}")
    assert model.status_code == 200 and tag in model.text
    assert httpx.get(f"{api}/ui/models/nope:0123").status_code == 404
    # No checkout in a served Bento: the page says where experiments are, instead of failing.
    experiments = httpx.get(f"{api}/ui/experiments")
    assert experiments.status_code == 200 and "run `tiffin ui` in a checkout" in experiments.text
