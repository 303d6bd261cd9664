"""Small studies fetched several at a time: one C-GET naming them in a UID list
(pulls.dicom.study_lists), each row still judged by what arrived of its own
study, and one by one again where the PACS fails the list."""

import pytest

from pulls.cli.inline import run_inline
from pulls.models import AuditEvent, ItemStatus, JobKind, JobStatus, RetrievedInstance
from pulls.services import job_create, retrieval_create_from_find
from tests.conftest import SCP_PORT, make_node, manifest_files, orthanc_holding
from tests.pulls.retrieval_support import QUIET, assert_project_holds_exactly


@pytest.fixture
def own_orthanc(tmp_path, dicom_data, settings):
    """An Orthanc of this test's own (it logs each request, and a test deletes
    a study from it), holding dicom_data's 8 studies of 6 instances."""
    settings.PACSNPULL_SCP_PORT = SCP_PORT
    with orthanc_holding(tmp_path / "orthanc", manifest_files(dicom_data)) as pacs:
        pacs.log_requests()
        yield pacs


def _c_gets(pacs) -> int:
    """The C-GET requests the PACS has received (its verbose log says each)."""
    return pacs.log_text().count("Incoming Get request")


def _node(pacs, alice):
    node = make_node("LISTS", pacs.dicom_port, "ORTHANC", connect_timeout=5)
    node.granted_users.add(alice)
    return node


@pytest.mark.parametrize("source", ["rows", "find"])
def test_small_studies_come_several_to_a_c_get_and_each_row_has_its_own(
    source, own_orthanc, storage, alice, project, dicom_data
):
    """Rows naming studies (counted as they are worked, and ahead), or a
    find's matches ("retrieve these": counted by the find)."""
    studies = sorted(dicom_data.studies)
    rows = [{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": uid} for uid in studies]
    node = _node(own_orthanc, alice)
    if source == "find":
        find = job_create(kind=JobKind.FIND, owner=alice, project=project, node=node, rows=rows)
        find = run_inline(find, **QUIET)
        job = retrieval_create_from_find(find_job=find, user=alice, method="get")
    else:
        job = job_create(kind=JobKind.GET, owner=alice, project=project, node=node, rows=rows)
    before = _c_gets(own_orthanc)
    job = run_inline(job, **QUIET)

    assert job.status == JobStatus.DONE, list(job.items.values_list("error_message", flat=True))
    assert_project_holds_exactly(project, dicom_data.instances, storage, dicom_data)
    # The PACS had fewer requests than rows: studies came several to a C-GET.
    assert 1 <= _c_gets(own_orthanc) - before <= 2
    # Yet each row has its own study's numbers, records and audit event.
    for item in job.items.all():
        uid = item.identifier["StudyInstanceUID"]
        mine = {i.sop_instance_uid for i in dicom_data.studies[uid]}
        assert (item.status, item.instances_expected, item.instances_received) == (
            ItemStatus.DONE, len(mine), len(mine),
        )  # fmt: skip
        recorded = RetrievedInstance.objects.filter(project=project, study_instance_uid=uid)
        assert set(recorded.values_list("sop_instance_uid", flat=True)) == mine
    events = AuditEvent.objects.filter(job=job, action="get", success=True)
    assert sorted(events.values_list("target", flat=True)) == sorted(
        f"row {item.row}" for item in job.items.all()
    )


def test_a_study_gone_from_the_pacs_fails_its_own_row_not_the_others_of_its_c_get(
    own_orthanc, storage, alice, project, dicom_data
):
    """Counted by the find, then deleted from the PACS: Orthanc fails a C-GET
    naming it with the others, whose rows are then fetched one by one."""
    studies = sorted(dicom_data.studies)
    node = _node(own_orthanc, alice)
    rows = [{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": uid} for uid in studies]
    find = run_inline(
        job_create(kind=JobKind.FIND, owner=alice, project=project, node=node, rows=rows),
        **QUIET,
    )
    assert find.status == JobStatus.DONE
    gone = studies[2]
    own_orthanc.delete_study(gone)

    job = run_inline(retrieval_create_from_find(find_job=find, user=alice, method="get"), **QUIET)

    items = {item.identifier["StudyInstanceUID"]: item for item in job.items.all()}
    assert items[gone].status != ItemStatus.DONE
    assert items[gone].instances_received == 0
    # Its own C-GET's answer, which says what it may mean.
    assert "does not hold what the C-GET names" in items[gone].error_message
    kept = [i for uid in studies if uid != gone for i in dicom_data.studies[uid]]
    assert {uid for uid, item in items.items() if item.status == ItemStatus.DONE} == (
        set(studies) - {gone}
    )
    assert_project_holds_exactly(project, kept, storage, dicom_data)
