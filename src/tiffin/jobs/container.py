"""The Bento as a container image: built from BentoML's Dockerfile, served and gated, and run as the batch runner.

BentoML writes the build context (the Bento, its models copied in) and the Dockerfile from its own template,
extended by `deploy/container/Dockerfile.j2`. Two things are ours: the locked requirements arrive as a
wheelhouse built on the host, so the build needs no network (no registry answers inside a build on these
machines), and Docker's classic builder does the build, since it runs where BuildKit does not. The image is
labelled with the model tag, the git commit and the data snapshot's hash, so `docker inspect` says what it serves.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from tiffin.serving.server import free_port
from tiffin.storage import paths
from tiffin.storage.champion import ChampionState

LABEL_PREFIX = "org.tiffin"
BENTO_PATH = "/home/bentoml/bento"  # BentoML's template's place for the Bento (its `bento__path`)


class ContainerFailed(RuntimeError):
    """Docker refused or failed: the message carries the end of what it printed."""


@dataclass(frozen=True)
class BuiltImage:
    image: str
    bento: str
    base_image: str
    seconds: float
    size_mb: float
    labels: dict[str, str]

    def as_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def docker(*arguments: str, capture: bool = True, timeout: float | None = None) -> str:
    """Run `docker ARGUMENTS`; its output, or ContainerFailed with the end of what it printed."""
    done = subprocess.run(["docker", *arguments], capture_output=capture, text=True, timeout=timeout)
    if done.returncode != 0:
        printed = ((done.stdout or "") + (done.stderr or ""))[-3000:]
        raise ContainerFailed(f"docker {' '.join(arguments[:2])} failed ({done.returncode}):\n{printed}")
    return done.stdout or ""


def wheelhouse(requirements: Path, cache: Path) -> Path:
    """Wheels of exactly the locked requirements, built on the host once per requirements file.

    pip is the base interpreter's (the project's environment, made by uv, has none); `--no-deps`, because
    the file is the whole locked set. The folder is named by the file's hash and marked complete last, so an
    interrupted build is redone, never used half-made.
    """
    folder = cache / hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    if (folder / ".complete").exists():
        return folder
    pip = [getattr(sys, "_base_executable", sys.executable), "-m", "pip"]
    print(f"wheelhouse: building wheels of {requirements} into {folder}", flush=True)
    done = subprocess.run([*pip, "wheel", "--no-deps", "--quiet", "-r", str(requirements), "-w", str(folder)])
    if done.returncode != 0:
        raise ContainerFailed(f"pip could not build the wheelhouse ({done.returncode}); see its output above")
    (folder / ".complete").touch()
    return folder


def image_labels(bento_path: Path) -> dict[str, str]:
    """What the image serves: the Bento, its champion, the git commit and the data snapshot it was trained on."""
    champion = ChampionState.load(bento_path / "src" / paths.CHAMPION).champion
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    snapshot = _snapshot_hash()
    return {
        f"{LABEL_PREFIX}.bento": f"{bento_path.parent.name}:{bento_path.name}",
        f"{LABEL_PREFIX}.model": champion or "none",
        f"{LABEL_PREFIX}.git-commit": commit or "unknown",
        f"{LABEL_PREFIX}.data-snapshot": snapshot or "unknown",
    }


def _snapshot_hash() -> str | None:
    """The snapshot's content hash as dvc.lock records it (the ingest stage's output)."""
    import yaml

    lock = Path("dvc.lock")
    if not lock.exists():
        return None
    for stage in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).values():
        for out in stage.get("outs", []):
            if out.get("path") == str(paths.SNAPSHOT):
                return out.get("md5")
    return None


def build(bento_tag: str, image: str, base_image: str, cache: Path) -> BuiltImage:
    """Build `image` from the Bento `bento_tag` on `base_image`; a rebuild with nothing changed reuses every layer."""
    import bentoml
    from bentoml._internal.container import construct_containerfile

    try:
        bento = bentoml.get(bento_tag)
    except bentoml.exceptions.NotFound as missing:
        raise ContainerFailed(f"{missing}: `make bento` builds it into the project's store (BENTOML_HOME)") from None
    path = Path(bento.path)
    wheels = wheelhouse(path / "env/python/requirements.txt", cache)
    labels = image_labels(path)
    began = time.monotonic()
    # BentoML's context: a copy of the Bento with its models (in a temporary folder), and the Dockerfile from our
    # template. BentoML refuses a template outside the working directory, and the copy's is in that folder: so
    # the build starts from the temporary folders' root (BentoML's own `containerize` fails the same way).
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.chdir(tempfile.gettempdir()))
        context, dockerfile = stack.enter_context(construct_containerfile(bento, enable_buildkit=False))
        shutil.copytree(wheels, Path(context) / "wheelhouse", ignore=shutil.ignore_patterns(".complete"))
        readable_by_all(Path(context))
        label_args = [argument for name, value in labels.items() for argument in ("--label", f"{name}={value}")]
        docker("build", "--file", str(Path(context) / dockerfile), "--build-arg", f"BASE_IMAGE={base_image}",
               *label_args, "--tag", image, context, capture=False)  # fmt: skip
    seconds = time.monotonic() - began
    size = int(docker("image", "inspect", "--format", "{{.Size}}", image).strip())
    return BuiltImage(image, str(bento.tag), base_image, round(seconds, 1), round(size / 1e6, 1), labels)


def readable_by_all(folder: Path) -> None:
    """Files readable and folders listable by everyone: COPY keeps modes, the store writes models owner-only,
    and the image's files stay root's, read by the service's user."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode | (0o555 if path.is_dir() else 0o444))


@dataclass
class RunningContainer:
    """A container of the image serving the API on the host's network (no bridge needed), on `port`."""

    name: str
    port: int
    url: str
    started: float

    def logs(self) -> str:
        done = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True)
        return done.stdout + done.stderr

    def wait_ready(self, timeout: float) -> float:
        """Seconds from `docker run` to /readyz answering 200; ContainerFailed as soon as the container exits."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:
                    if response.status == 200:
                        return round(time.monotonic() - self.started, 1)
            except OSError:
                pass
            if docker("inspect", "--format", "{{.State.Running}}", self.name).strip() != "true":
                raise ContainerFailed(f"the container exited before it was ready:\n{self.logs()[-3000:]}")
            time.sleep(0.5)
        raise ContainerFailed(f"{self.url}/readyz did not answer 200 within {timeout:.0f} s")


@contextlib.contextmanager
def serving(image: str, env: dict[str, str], *, mounts: dict[Path, str] | None = None) -> Iterator[RunningContainer]:
    """Start `image` serving on a free port of 127.0.0.1; the container is always removed, its log kept."""
    port = free_port()
    name = f"tiffin-{port}"
    options = [argument for key, value in env.items() for argument in ("--env", f"{key}={value}")]
    options += [argument for host, inside in (mounts or {}).items() for argument in ("--volume", f"{host}:{inside}")]
    started = time.monotonic()
    docker("run", "--detach", "--network", "host", "--name", name, *options, image,
           "tiffin", "serve", BENTO_PATH, "--host", "127.0.0.1", "--port", str(port))  # fmt: skip
    try:
        yield RunningContainer(name, port, f"http://127.0.0.1:{port}", started)
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True)


def gate(
    image: str, db_url: str, *, slo: Path, out: Path, run_seconds: float | None = None
) -> tuple[int, float | None]:
    """The release gate against a container of `image`: its exit code and the container's start-to-ready seconds.

    The container gets a copy of a SQLite source (history features are read from it, the load's log goes to it),
    mounted writable for the image's non-root user; any other database is used as it is.
    """
    from tiffin.jobs import loadtest
    from tiffin.storage import database

    out = out.resolve()
    data = out / "database"
    data.mkdir(parents=True, exist_ok=True)
    env, mounts = {"TIFFIN_DB_URL": db_url}, {}
    copied = database.sqlite_copy(db_url, data, "source")
    if copied != db_url:
        data.chmod(0o777)  # the image's user (uid 1034) writes the log and SQLite's journal beside the file
        Path(copied.removeprefix("sqlite:///")).chmod(0o666)
        env["TIFFIN_DB_URL"], mounts[data] = "sqlite:////data/source.db", "/data"
    with serving(image, env, mounts=mounts) as container:
        ready_after = None
        try:
            ready_after = container.wait_ready(180)
            print(f"{image} ready on {container.url} in {ready_after:.1f} s", flush=True)
            code = loadtest.gate(bento=None, host=container.url, slo=slo, out=out, run_seconds=run_seconds)
        except (RuntimeError, OSError) as failure:
            print(f"the container failed: {failure}", file=sys.stderr)
            code = loadtest.SERVER_FAILED
        finally:
            (out / "container.log").write_text(container.logs())
    return code, ready_after


def render_manifests(folder: Path, image: str) -> str:
    """The Kubernetes manifests of `folder` (a kustomization) with `image` for the project's image, rendered by
    `kubectl kustomize`: a copy's kustomization.yaml gets the image, the checkout's stays as it is."""
    import yaml

    if shutil.which("kubectl") is None:
        raise ContainerFailed("kubectl is not installed: it renders the manifests (`kubectl kustomize`)")
    name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(shutil.copytree(folder, Path(scratch) / "manifests"))
        kustomization = yaml.safe_load((copy / "kustomization.yaml").read_text())
        for entry in kustomization["images"]:
            entry.update(newName=name, newTag=tag)
        (copy / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
        done = subprocess.run(["kubectl", "kustomize", str(copy)], capture_output=True, text=True)
    if done.returncode != 0:
        raise ContainerFailed(f"kubectl kustomize failed:\n{done.stderr[-2000:]}")
    return done.stdout
