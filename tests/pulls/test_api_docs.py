"""docs/api.md's Python session, run as written against a live portal, a real
Celery worker and Orthanc: the documented script works."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import zipfile

import pytest

from pulls.api.tokens import token_create
from pulls.models import Project
from tests.conftest import REPO

pytestmark = pytest.mark.services


def _python_block() -> str:
    text = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "docs/api.md holds one Python session"
    return blocks[0]


def test_the_documented_python_session_runs_as_written(
    live_server, celery_worker, tmp_path, alice, project, orthanc_node, dicom_data
):
    Project.objects.filter(pk=project.pk).update(storage_path=str(tmp_path / "files"))
    patient = sorted(dicom_data.patients)[0]
    _, token = token_create(user=alice, name="docs", read_only=False)
    script = tmp_path / "session.py"
    script.write_text(_python_block(), encoding="utf-8")
    env = {**os.environ, "PACSNPULL_URL": live_server.url, "PACSNPULL_TOKEN": token,
           "PATIENT_ID": patient}  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{celery_worker.log_tail()}"
    instances = dicom_data.patients[patient]
    studies = {i.study_instance_uid for i in instances}
    assert f"{len(studies)} studies found" in done.stdout
    assert f"{len(instances)} instances retrieved, 0 rows failed" in done.stdout
    with zipfile.ZipFile(tmp_path / "files.zip") as archive:
        names = [n for n in archive.namelist() if n.endswith(".dcm")]
    assert len(names) == len(instances)
    with open(tmp_path / "manifest.csv", encoding="utf-8") as fh:
        assert {row["StudyInstanceUID"] for row in csv.DictReader(fh)} == studies
