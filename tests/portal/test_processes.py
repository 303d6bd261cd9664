"""The process list is defined once (Procfile); docker-compose.yml mirrors it."""

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _procfile() -> dict[str, str]:
    entries = {}
    for line in (REPO / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            entries[name.strip()] = command.strip()
    return entries


@pytest.fixture(scope="module")
def compose_services() -> set[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is not installed: apt-get install docker-compose"
    result = subprocess.run(
        [binary, "--profile", "demo", "config", "--services"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_compose_validates_and_has_every_process_of_the_procfile(compose_services):
    # make run's embedded Redis is the compose redis service.
    assert set(_procfile()) <= compose_services
    assert {"postgres", "redis", "web", "worker", "beat", "storescp", "demo"} <= compose_services


def test_compose_runs_the_same_commands_as_the_procfile():
    compose = (REPO / "docker-compose.yml").read_text()
    for name, command in _procfile().items():
        if name == "redis":
            continue  # compose uses the redis image instead of the embedded server
        program = " ".join(command.split()[:3]).replace("$PORT", "")
        assert program.split(" --")[0] in compose, f"{name}: {program!r} not in docker-compose.yml"


def test_the_workers_scale_out(tmp_path):
    """`docker-compose up --scale worker=N` (docs/operations.md): the worker service
    binds no host port and names no container, so N of them can run; and every
    service that reaches the storage shares the one volume at the same path."""
    import yaml

    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is not installed: apt-get install docker-compose"
    result = subprocess.run(
        [binary, "config"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    worker = services["worker"]
    assert "ports" not in worker and "container_name" not in worker
    for name in ("web", "worker", "interactive", "storescp"):
        mounts = {
            v["target"] if isinstance(v, dict) else v.split(":")[1]
            for v in services[name]["volumes"]
        }
        assert "/srv/pacsnpull/storage" in mounts, name
