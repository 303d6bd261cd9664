"""The command line on a fresh clone: the first `manage.py echo|find|move`, in a
new, empty instance folder, with no portal and no Redis running, just works,
and obeys the node's limits held in its own process."""

import json
import os
import subprocess
import sys
import time

import pytest

from pulls.sandbox.procs import free_port
from tests.conftest import REPO


def _run(instance, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)  # the default: SQLite in the new instance folder
    env.update(
        PACSNPULL_INSTANCE_DIR=str(instance),
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
    )
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _conf(tmp_path, port: int, **extra) -> str:
    conf = {
        "job_title": "first",
        "host_ip": "127.0.0.1",
        "host_port": port,
        "client_name": "PACSNPULL",
        "client_ip": "127.0.0.1",
        "client_port": free_port(),
        "query_model": "S",
        "query_break_count": 10,
        "host_name": "ORTHANC",
        **extra,
    }
    path = tmp_path / "conf.json"
    path.write_text(json.dumps(conf))
    return str(path)


@pytest.mark.services
def test_echo_find_and_move_work_the_first_time_in_an_empty_instance_folder(
    tmp_path, orthanc, dicom_data
):
    instance = tmp_path / "new-instance"
    assert not instance.exists()
    conf = _conf(tmp_path, orthanc.dicom_port)

    echo = _run(instance, "echo", "--config", conf)
    assert echo.returncode == 0, echo.stderr
    assert "C-ECHO succeeded" in echo.stdout
    assert "setting up the database" in echo.stderr
    assert "Traceback" not in echo.stderr

    patient = sorted(dicom_data.patients)[0]
    query = tmp_path / "query.json"
    query.write_text(json.dumps([{"QueryRetrieveLevel": "STUDY", "PatientID": patient}]))
    found = _run(instance, "find", "--config", conf, "--query", str(query))
    assert found.returncode == 0, found.stderr
    assert "setting up the database" not in found.stderr  # once only
    results = instance / "cli" / "first" / "qry" / "find_results.csv"
    studies = {i.study_instance_uid for i in dicom_data.patients[patient]}
    assert all(uid in results.read_text() for uid in studies)

    moved = _run(instance, "move", "--config", conf, "--query", str(query), "--method", "get")
    assert moved.returncode == 0, moved.stderr
    on_disk = {p.stem for p in (instance / "cli" / "first" / "dcm").rglob("*.dcm")}
    assert on_disk == {i.sop_instance_uid for i in dicom_data.patients[patient]}


@pytest.mark.services
def test_without_redis_the_command_line_holds_the_query_limit_itself_and_says_so(
    tmp_path, orthanc, dicom_data
):
    """Six C-FINDs at 60 a minute (CONF.json's queries_per_minute): one a second,
    so no less than five seconds, with no Redis to share the limit through."""
    instance = tmp_path / "new-instance"
    conf = _conf(tmp_path, orthanc.dicom_port, queries_per_minute=60, max_associations=1)
    rows = [
        {"QueryRetrieveLevel": "STUDY", "PatientID": patient}
        for patient in sorted(dicom_data.patients)
    ][:4]
    rows += [{"QueryRetrieveLevel": "STUDY", "AccessionNumber": f"NONE{n}"} for n in range(2)]
    query = tmp_path / "query.json"
    query.write_text(json.dumps(rows))
    assert _run(instance, "echo", "--config", conf).returncode == 0  # the database, first

    started = time.monotonic()
    found = _run(instance, "find", "--config", conf, "--query", str(query))
    took = time.monotonic() - started

    assert found.returncode == 0, found.stderr
    assert "60 queries a minute (CONF.json)" in found.stderr
    assert "1 association(s) at once (CONF.json)" in found.stderr
    assert "held in this process" in found.stderr
    assert took >= 5.0  # a lower bound only: a busy machine makes it slower, never faster


@pytest.mark.services
def test_the_default_limits_are_named_with_the_key_that_changes_them(tmp_path, orthanc):
    instance = tmp_path / "new-instance"
    conf = _conf(tmp_path, orthanc.dicom_port)
    query = tmp_path / "query.json"
    query.write_text(json.dumps([{"QueryRetrieveLevel": "STUDY", "PatientID": "NOBODY"}]))
    found = _run(instance, "find", "--config", conf, "--query", str(query))
    assert found.returncode == 0, found.stderr
    assert "120 queries a minute (default; CONF.json's queries_per_minute sets it)" in found.stderr


def test_a_limit_that_is_not_a_number_is_named(tmp_path):
    instance = tmp_path / "new-instance"
    conf = _conf(tmp_path, 4242, queries_per_minute="lots")
    result = _run(instance, "echo", "--config", conf)
    assert result.returncode != 0
    assert "queries_per_minute: must be a whole number, not 'lots'" in result.stderr
    assert "Traceback" not in result.stderr
