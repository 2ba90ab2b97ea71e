"""The Bento installs exactly the locked versions: service/requirements.txt is uv.lock's export."""

import os
import shlex
import shutil
import subprocess
import sys

from ..conftest import ROOT


def uv_command() -> list[str]:
    """`make` exports UV (uv on PATH, or `python3 -m uv` where make installed it with pip)."""
    if os.environ.get("UV"):
        return shlex.split(os.environ["UV"])
    return [shutil.which("uv")] if shutil.which("uv") else [sys.executable, "-m", "uv"]


def test_the_bento_requirements_are_the_lock_file_exported() -> None:
    exported = subprocess.run(
        [*uv_command(), "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes", "--no-header", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    committed = (ROOT / "service/requirements.txt").read_text()
    assert exported == committed, "service/requirements.txt is stale: run `make bento` (it re-exports uv.lock)"
    pins = [line for line in committed.splitlines() if line and not line.startswith(("#", " "))]
    assert all("==" in pin for pin in pins) and not any(pin.startswith("dvc==") for pin in pins)


def test_outside_a_checkout_the_database_must_be_named(tmp_path, monkeypatch) -> None:
    """A served Bento or the image has no project folder: the embedded SQLite default would be created wherever the
    process runs (inside the model store, or the container), and its log lost with it. So it refuses to start."""
    import pytest

    from tiffin.serving.config import ServiceConfig
    from tiffin.storage import settings

    monkeypatch.delenv("TIFFIN_DB_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(settings.DatabaseNotSet, match="set TIFFIN_DB_URL"):
        ServiceConfig.from_env()
    done = subprocess.run([sys.executable, "-m", "tiffin", "batch"], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "TIFFIN_DB_URL"})  # fmt: skip
    assert done.returncode == 2 and "set TIFFIN_DB_URL" in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.rglob("*.db"))  # nothing created where it ran

    monkeypatch.setenv("TIFFIN_DB_URL", "postgresql://tiffin@db.internal/prod")
    assert ServiceConfig.from_env().log_db_url == "postgresql://tiffin@db.internal/prod"
    monkeypatch.delenv("TIFFIN_DB_URL")
    monkeypatch.chdir(ROOT)  # a checkout: the embedded default, as `make run` needs it
    assert settings.db_url() == settings.DEFAULT_DB_URL


def test_a_bento_finds_its_champion_file_beside_its_package(tmp_path, monkeypatch) -> None:
    """In a Bento (and the image) the package is src/tiffin and the champion file src/models/champion.json; the
    batch runner started from anywhere finds it there, as the API does from src/."""
    from tiffin.storage import paths, settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TIFFIN_CHAMPION_FILE", raising=False)
    monkeypatch.setattr(settings, "SOURCE_ROOT", tmp_path / "bento/src")
    monkeypatch.setattr(settings, "PROJECT_ROOT", tmp_path / "bento")
    champion = tmp_path / "bento/src" / paths.CHAMPION
    champion.parent.mkdir(parents=True)
    champion.write_text("{}")
    assert settings.champion_file() == champion
