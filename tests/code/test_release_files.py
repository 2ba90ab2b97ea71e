"""Workflows and Kubernetes manifests are validated offline, and the validators do catch mistakes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from ..conftest import ROOT

BIN = Path(sys.executable).parent
WORKFLOWS = sorted((ROOT / ".github/workflows").glob("*.yml"))
MANIFESTS = sorted((ROOT / "deploy/kubernetes").glob("*.yaml"))


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
