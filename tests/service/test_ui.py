"""The web interface in a real browser: Debian's Chromium driven by Playwright, over a project with a real DVC
experiment, a batch run with rejects, two monitoring windows and a gated model. Screenshots: reports/ui/."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tiffin.serving.server import free_port

from ..conftest import IN_CI, ROOT, Project, make_project, small_bike_project

CHROMIUM = os.environ.get("TIFFIN_CHROMIUM", "/usr/bin/chromium")  # Debian's package: `make browser`
SHOTS = ROOT / "reports/ui"
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def ui_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A reproduced project with an experiment, a batch run over a week with one bad row, two monitored windows."""
    project = small_bike_project(make_project(tmp_path_factory.mktemp("ui") / "project"))
    project.run("dvc", "repro")
    project.commit("reproduced")
    project.run("dvc", "exp", "run", "-n", "fewer-trees", "-S", "train.max_iter=20")
    project.run("git", "checkout", "--", ".")  # the workspace back to the commit: the experiment stays in its ref
    project.run("dvc", "checkout", "--force")
    engine = sa.create_engine(project.env["TIFFIN_DB_URL"])
    with engine.begin() as connection:  # an hour of 77: the batch rejects the row and names field and rule
        connection.execute(sa.text("UPDATE rentals SET hr = '77' WHERE dteday = '2011-04-10' AND hr = '5am'"))
    engine.dispose()
    done = project.run("tiffin", "batch", "--start", "2011-04-01", "--end", "2011-04-28", check=False)
    assert done.returncode == 3, done.stderr  # 3: a partial run, the bad row rejected and kept
    for start, end in (("2011-04-01", "2011-04-14"), ("2011-04-15", "2011-04-28")):
        done = project.run("tiffin", "monitor", "--start", start, "--end", end, check=False)
        assert done.returncode in (0, 4), done.stderr  # 4: an alarm, still a report
    return project


@pytest.fixture(scope="module")
def ui_url(ui_project: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`tiffin ui` in the project, on a free port."""
    port = free_port()
    log = (tmp_path_factory.mktemp("ui-log") / "ui.log").open("w")
    server = subprocess.Popen(["tiffin", "ui", "--port", str(port)], cwd=ui_project.path, env=ui_project.env,
                              stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{url}/", timeout=2)
            break
        except httpx.TransportError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"`tiffin ui` did not start: {Path(log.name).read_text()}") from None
            time.sleep(0.3)
    yield url
    server.terminate()
    server.wait(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    executable = shutil.which(CHROMIUM)
    if executable is None:
        message = f"{CHROMIUM} is not installed: `make browser`"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("requestfailed", lambda request: errors.append(f"request failed: {request.url}"))
    yield page
    context.close()
    assert not errors, errors


def shot(page: object, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_every_page_opens_from_the_menu_and_survives_a_reload(ui_url: str, page: object) -> None:
    page.goto(f"{ui_url}/")
    shot(page, "home")
    for label in ("Experiments", "Models", "Batch", "Monitoring"):
        page.click(f"header >> text={label}")
        heading = page.inner_text("h1")
        assert page.locator("#unavailable").count() == 0, page.inner_text("#unavailable")
        page.reload()
        assert page.inner_text("h1") == heading
        shot(page, label.lower())


def test_experiments_sort_by_a_metric_and_name_the_best_with_its_command(ui_url: str, page: object) -> None:
    page.goto(f"{ui_url}/experiments")
    assert page.locator("tr[data-run='fewer-trees']").count() == 1  # the experiment, beside the commits
    metric = "eval/metrics.json:test.mae"
    headers = [header.get_attribute("data-metric") for header in page.locator("a.sort").all()]
    column = headers.index(metric) + 4  # run, kind, from, then the metrics (nth-child counts from 1)

    def values() -> list[float]:
        cells = page.locator(f"#experiments tbody tr td:nth-child({column})").all_inner_texts()
        return [float(cell) for cell in cells if cell.strip()]

    for order in ("asc", "desc"):
        page.click(f"a.sort[data-metric='{metric}']")
        if f"order={order}" not in page.url:
            page.click(f"a.sort[data-metric='{metric}']")
        shown = values()
        assert len(shown) >= 3 and shown == sorted(shown, reverse=order == "desc"), (order, shown)
        page.reload()  # the sort is in the URL
        assert values() == shown
        best = page.locator("#experiments tbody tr").first.get_attribute("data-run")
        assert best in page.inner_text("#best")
    page.goto(f"{ui_url}/experiments?kind=experiment&sort={metric}")
    assert page.inner_text("#apply") == "dvc exp apply fewer-trees"
    # Filter by the metric: the runs at or under the median, typed into the form as a person would.
    page.goto(f"{ui_url}/experiments?sort={metric}")
    everything = values()
    cut = round(sorted(everything)[len(everything) // 2] + 0.005, 3)  # the shown values are rounded to 4 digits
    page.fill("input[name=max]", str(cut))
    page.click("form.filters button")
    assert f"max={cut}" in page.url and values() == [v for v in sorted(everything) if v <= cut]


def test_a_run_shows_its_plots_beside_the_workspace(ui_url: str, page: object) -> None:
    page.goto(f"{ui_url}/experiments")
    page.click("tr[data-run='fewer-trees'] a")
    assert page.inner_text("#apply") == "dvc exp apply fewer-trees"
    assert "train.max_iter" in page.inner_text("#compare")
    charts = page.locator("svg.chart")
    assert charts.count() == 3  # the three plots of dvc.yaml, each with both revisions drawn
    assert page.locator("svg.chart circle").count() > 100 and page.locator("svg.chart rect").count() > 20
    shot(page, "experiment")


def test_a_models_gate_decision_opens_with_its_numbers(ui_url: str, ui_project: Project, page: object) -> None:
    champion = ui_project.read_json("models/champion.json")["datasets"]["bike_demand"]["champion"]
    decision = next(e["decision"] for e in ui_project.read_json("models/champion.json")["datasets"]["bike_demand"]
                    ["history"] if e["tag"] == champion and "decision" in e)  # fmt: skip
    page.goto(f"{ui_url}/models")
    page.click(f"table.models >> text={champion}")
    assert page.inner_text("h1") == champion
    assert page.locator("#slices tr").count() == len(decision["slices"]) + 1
    first = decision["slices"][0]
    assert f"{first['candidate_mae']:.2f}" in page.inner_text("#slices")
    commit = re.search(r"\b[0-9a-f]{40}\b", page.inner_text("#lineage")).group(0)
    ui_project.run("git", "cat-file", "-e", f"{commit}^{{commit}}")  # the lineage names a commit of the project
    shot(page, "model")


def test_batch_shows_the_ledger_the_rejects_by_field_and_rule_and_the_watermark(
    ui_url: str, ui_project: Project, page: object
) -> None:
    page.goto(f"{ui_url}/batch")
    engine = sa.create_engine(ui_project.env["TIFFIN_DB_URL"])
    with engine.connect() as connection:
        runs = connection.execute(sa.text("SELECT count(*) FROM batch_runs")).scalar_one()
        rule = connection.execute(sa.text("SELECT rule FROM prediction_rejects WHERE field = 'hr'")).scalar_one()
    engine.dispose()
    assert page.locator("#runs tr").count() == runs + 1
    rejects = page.inner_text("#rejects")
    assert "hr" in rejects and rule in rejects and ": 77" in rejects
    assert "2011-04-28" in page.inner_text("#watermarks")


def test_monitoring_draws_each_slice_over_the_windows(ui_url: str, page: object) -> None:
    page.goto(f"{ui_url}/monitoring")
    assert page.locator("#windows tr").count() == 3  # two windows
    assert page.locator("svg.chart polyline").count() >= 2
    page.click("main >> text=dashboard")
    page.wait_for_load_state("load")  # a click returns once the navigation commits: the new page may be blank yet
    assert "Monitoring" in page.title() or page.locator("h1").count() >= 1
    assert "2011-04-15" in page.content()  # the latest window's dashboard


def test_pages_fit_a_phone(ui_url: str, browser: object) -> None:
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    for path in ("/", "/experiments", "/models", "/batch", "/monitoring"):
        page.goto(f"{ui_url}{path}")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (path, overflow)  # wide tables scroll inside their own box
    shot(page, "phone-experiments")
    context.close()
