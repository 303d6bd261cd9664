"""A PACS that caps its answers: rows are flagged, and date ranges are split."""

import pytest
from django.conf import settings

from pulls.cli.inline import run_inline
from pulls.models import JobKind
from pulls.sandbox.orthanc import Orthanc
from pulls.services import job_create
from tests.conftest import SCP_PORT, make_node, manifest_files

CAP = 3


@pytest.fixture(scope="module")
def capped_orthanc(sandbox, dicom_data):
    pacs = Orthanc(
        sandbox / "orthanc-capped",
        aet="CAPPED",
        modalities={"portal": (settings.PACSNPULL_AE_TITLE, "127.0.0.1", SCP_PORT)},
        extra_config={"LimitFindResults": CAP},
    ).start()
    try:
        pacs.upload(manifest_files(dicom_data))
        yield pacs
    finally:
        pacs.stop()


def test_rows_at_the_cap_are_split_by_date_or_flagged(capped_orthanc, alice, project, dicom_data):
    node = make_node("CAPPED", capped_orthanc.dicom_port, "CAPPED", result_cap=CAP)
    node.granted_users.add(alice)
    rows = [
        {"QueryRetrieveLevel": "STUDY", "StudyDate": "20000101-20301231", "StudyInstanceUID": ""},
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "", "PatientID": ""},
    ]
    job = job_create(kind=JobKind.FIND, owner=alice, project=project, node=node, rows=rows)
    job = run_inline(job, on_progress=lambda job: None)
    split, flagged = job.items.order_by("row")
    assert len(dicom_data.studies) > CAP
    assert (split.matches, split.possibly_truncated) == (len(dicom_data.studies), False)
    found = set(split.find_results.values_list("study_instance_uid", flat=True))
    assert found == set(dicom_data.studies)
    assert (flagged.matches, flagged.possibly_truncated) == (CAP, True)
