"""Settings from the environment: named errors for bad values, a clean deploy check."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def manage(*args: str, env: dict[str, str], instance: Path) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY")}
    environ.update(env)
    environ["PACSNPULL_INSTANCE_DIR"] = str(instance)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("PACSNPULL_SCP_PORT", "eleven", "a whole number from 1 to 65535"),
        ("PACSNPULL_SCP_PORT", "70000", "a whole number from 1 to 65535"),
        ("PACSNPULL_AE_TITLE", "A-TITLE-FAR-TOO-LONG", "a DICOM AE title"),
        ("DEBUG", "maybe", "one of true/false"),
        ("REDIS_URL", "localhost:6379", "a URL of the form redis://"),
        ("DATABASE_URL", "mysql://db/pacs", "a URL of the form postgres://"),
        ("TIME_ZONE", "Mars/Olympus", "an IANA time zone name"),
        ("PACSNPULL_STORAGE_ROOT", "relative/path", "an absolute path"),
        ("SECRET_KEY", "short", "at least 50 random characters"),
    ],
)
def test_a_bad_value_stops_start_up_with_the_variable_named(tmp_path, name, value, expected):
    result = manage("check", env={name: value}, instance=tmp_path)
    assert result.returncode != 0
    assert f"{name}=" in result.stderr or name in result.stderr
    assert expected in result.stderr


def test_a_secret_key_is_generated_once_into_the_instance_folder(tmp_path):
    assert manage("check", env={}, instance=tmp_path).returncode == 0
    key_file = tmp_path / "secret_key"
    first = key_file.read_text()
    assert len(first) >= 50
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert manage("check", env={}, instance=tmp_path).returncode == 0
    assert key_file.read_text() == first


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    production = {
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "pacsnpull.hospital.example",
        "CSRF_TRUSTED_ORIGINS": "https://pacsnpull.hospital.example",
        "PACSNPULL_HTTPS": "true",
    }
    result = manage(
        "check", "--deploy", "--fail-level", "WARNING", env=production, instance=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_debug_is_off_unless_set(tmp_path):
    result = manage(
        "shell", "-c", "from django.conf import settings; print(settings.DEBUG)",
        env={}, instance=tmp_path,
    )  # fmt: skip
    assert result.stdout.strip().splitlines()[-1] == "False"
