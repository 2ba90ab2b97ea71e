"""Workflows and Kubernetes manifests are validated offline, and the validators do catch mistakes."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ..conftest import ROOT

BIN = Path(sys.executable).parent
WORKFLOWS = sorted((ROOT / ".github/workflows").glob("*.yml"))
MANIFESTS = sorted(p for p in (ROOT / "deploy/kubernetes").glob("*.yaml") if p.name != "kustomization.yaml")


def check_workflows(*files: Path) -> subprocess.CompletedProcess:
    command = [BIN / "check-jsonschema", "--builtin-schema", "vendor.github-workflows", *files]
    return subprocess.run(command, capture_output=True, text=True)


def check_manifests(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run([BIN / "kubernetes-validate", "--strict", *files], capture_output=True, text=True)


def test_the_workflows_match_the_github_workflow_schema(tmp_path: Path) -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "release.yml"}
    assert check_workflows(*WORKFLOWS).returncode == 0
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOWS[0].read_text().replace("runs-on:", "run-on:"))
    assert check_workflows(broken).returncode != 0


def test_the_manifests_match_the_kubernetes_schemas(tmp_path: Path) -> None:
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in MANIFESTS}
    assert kinds == {"Deployment", "Service", "HorizontalPodAutoscaler", "CronJob"}
    assert check_manifests(*MANIFESTS).returncode == 0, check_manifests(*MANIFESTS).stdout
    broken = tmp_path / "broken.yaml"
    broken.write_text((ROOT / "deploy/kubernetes/api-deployment.yaml").read_text().replace("containerPort", "port"))
    assert check_manifests(broken).returncode != 0


def test_workflow_steps_call_make_so_ci_runs_the_same_way_locally() -> None:
    for workflow in WORKFLOWS:
        for job in yaml.safe_load(workflow.read_text())["jobs"].values():
            for step in job["steps"]:
                if "run" not in step:  # an action (`uses:`), not shell
                    continue
                command = step["run"]
                assert command.startswith(("make ", "docker push", "gh pr comment")), (workflow.name, command)


def test_the_deployment_probes_and_the_token_come_from_the_service_contract() -> None:
    deployment = yaml.safe_load((ROOT / "deploy/kubernetes/api-deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    token = next(e for e in container["env"] if e["name"] == "TIFFIN_API_TOKEN")
    assert token["valueFrom"]["secretKeyRef"]["name"] == "tiffin-api"
    assert {"requests", "limits"} <= set(container["resources"])


def test_the_gate_remeasures_a_timing_miss_but_never_a_wrong_answer() -> None:
    from tiffin.jobs.loadtest import ObjectiveResult, worth_remeasuring

    def check(metric: str, passed: bool, measured: float = 2.0) -> ObjectiveResult:
        return ObjectiveResult("single", metric, 1.0, measured, passed)

    assert not worth_remeasuring([check("p99_ms", True), check("min_rps", True)])
    assert worth_remeasuring([check("p99_ms", False), check("min_rps", False), check("max_failure_ratio", True)])
    assert not worth_remeasuring([check("p99_ms", False), check("max_failure_ratio", False)])
    # A type that saw no request in a short run (the machine was slow) is unmeasured, not wrong: measured again.
    assert worth_remeasuring([check("p99_ms", False), check("max_failure_ratio", False, float("inf"))])


def test_the_release_deploys_the_image_it_pushed() -> None:
    """The manifests name a placeholder that kustomization.yaml maps; the release sets it to the image it pushed."""
    kustomization = yaml.safe_load((ROOT / "deploy/kubernetes/kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {p.name for p in MANIFESTS}
    placeholders = {image["name"] for image in kustomization["images"]}
    for manifest in MANIFESTS:
        for line in manifest.read_text().splitlines():
            if line.strip().startswith("image:"):
                assert line.split(":", 1)[1].split("#")[0].strip() in placeholders, manifest.name
    steps = [step.get("run", "") for step in yaml.safe_load((ROOT / ".github/workflows/release.yml").read_text())[
        "jobs"]["release"]["steps"]]  # fmt: skip
    pushed = next(i for i, run in enumerate(steps) if run.startswith("docker push ${{ env.IMAGE }}"))
    rendered = next(i for i, run in enumerate(steps) if run == "make release-manifests IMAGE=${{ env.IMAGE }}")
    assert pushed < rendered


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed here")
def test_the_rendered_manifests_run_the_released_image_with_the_database_secret() -> None:
    from tiffin.jobs.container import render_manifests

    released = "ghcr.io/acme/tiffin:v9.1"
    rendered = list(yaml.safe_load_all(render_manifests(ROOT / "deploy/kubernetes", released)))
    templates = {"Deployment": ["spec", "template"], "CronJob": ["spec", "jobTemplate", "spec", "template"]}
    pods = {}
    for document in rendered:
        if document["kind"] in templates:
            pods[document["kind"]] = functools.reduce(dict.get, templates[document["kind"]], document)["spec"]
    assert set(pods) == {"Deployment", "CronJob"}
    for pod in pods.values():
        [container] = pod["containers"]
        assert container["image"] == released
        url = next(e for e in container["env"] if e["name"] == "TIFFIN_DB_URL")
        assert url["valueFrom"]["secretKeyRef"] == {"name": "tiffin-database", "key": "url"}
    assert "ghcr.io/acme/tiffin:v9.1" not in (ROOT / "deploy/kubernetes/kustomization.yaml").read_text()
