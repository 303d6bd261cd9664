"""A find's results with every column people and filters need: the standard
return keys at each level, a node that leaves some out, filters on a key the
PACS did not return, and the retrieve form that keeps what was typed."""

from datetime import date

import pytest
from django.core.exceptions import ValidationError

from pulls.cli.inline import run_inline
from pulls.dicom.identifiers import find_row
from pulls.models import FindResult, Job, JobKind, JobStatus
from pulls.services import job_create, retrieval_create_from_find
from tests.pulls.retrieval_support import QUIET

STUDY_KEYS = {
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "AccessionNumber", "StudyDescription", "ModalitiesInStudy", "StudyID",
    "ReferringPhysicianName", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
}  # fmt: skip


def test_each_level_asks_the_standard_keys_a_row_does_not_name():
    row = find_row({"QueryRetrieveLevel": "STUDY", "PatientID": "P1", "StudyDate": "2020"})
    assert set(row) >= STUDY_KEYS
    assert (row["PatientID"], row["StudyDate"]) == ("P1", "2020")  # the row's own values stay
    series = find_row({"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": "1.2"})
    assert {"Modality", "SeriesNumber", "SeriesDescription", "BodyPartExamined"} <= set(series)
    trimmed = find_row(
        {"QueryRetrieveLevel": "STUDY"}, omitted={"ModalitiesInStudy", "StudyInstanceUID"}
    )
    assert "ModalitiesInStudy" not in trimmed
    assert "StudyInstanceUID" in trimmed  # what a retrieval needs is always asked


@pytest.mark.services
def test_a_find_naming_one_key_returns_every_column_people_read(
    alice, project, orthanc_node, dicom_data
):
    """Tried as a new user would: a file naming PatientID only. The matches hold
    the description, the modalities, the accession number, the name; a node that
    leaves out ModalitiesInStudy does not ask it."""
    patient = sorted(dicom_data.patients)[0]
    rows = [{"QueryRetrieveLevel": "STUDY", "PatientID": patient}]
    job = run_inline(
        job_create(kind=JobKind.FIND, owner=alice, project=project, node=orthanc_node, rows=rows),
        **QUIET,
    )
    assert job.status == JobStatus.DONE
    studies = {i.study_instance_uid: i for i in dicom_data.patients[patient]}
    for match in FindResult.objects.filter(job=job):
        source = studies[match.study_instance_uid]
        attributes = match.attributes
        assert attributes["StudyDescription"] == source.study_description
        assert attributes["AccessionNumber"] == source.accession_number
        assert attributes["ModalitiesInStudy"] == source.modality
        assert attributes["PatientName"] == source.patient_name
        assert match.modality == source.modality
    orthanc_node.return_keys_omitted = "ModalitiesInStudy"
    orthanc_node.save()
    job = run_inline(
        job_create(kind=JobKind.FIND, owner=alice, project=project, node=orthanc_node, rows=rows),
        **QUIET,
    )
    assert not any("ModalitiesInStudy" in m.attributes for m in FindResult.objects.filter(job=job))


def _find_without_modality(alice, project, node) -> Job:
    find = job_create(
        kind=JobKind.FIND, owner=alice, project=project, node=node,
        rows=[{"QueryRetrieveLevel": "STUDY", "PatientID": "P1"}],
    )  # fmt: skip
    Job.objects.filter(pk=find.pk).update(status=JobStatus.DONE, matches=2)
    find.refresh_from_db()
    for uid in ("1.1", "1.2"):
        FindResult.objects.create(
            job=find, item=find.items.get(), attributes={"StudyDescription": "CT CHEST"},
            patient_id="P1", study_instance_uid=uid, study_date=date(2020, 1, 5),
            study_description="CT CHEST",
        )  # fmt: skip
    return find


def test_a_filter_on_a_key_the_pacs_did_not_return_says_so(alice, project, orthanc_node):
    find = _find_without_modality(alice, project, orthanc_node)
    with pytest.raises(ValidationError) as info:
        retrieval_create_from_find(find_job=find, user=alice, method="get", modality="CT")
    message = " ".join(info.value.messages)
    assert "the PACS returned no Modality (nor ModalitiesInStudy) for any of these matches" in (
        message
    )
    with pytest.raises(ValidationError) as info:  # the key is there: no more to say
        retrieval_create_from_find(find_job=find, user=alice, method="get", description="MR*")
    assert info.value.messages == ["No matches to retrieve with these filters."]


def test_the_retrieve_form_keeps_what_was_typed_and_says_why(client, alice, project, orthanc_node):
    find = _find_without_modality(alice, project, orthanc_node)
    client.force_login(alice)
    response = client.post(
        f"/jobs/{find.code}/retrieve/",
        {"method": "get", "level": "STUDY", "modality": "CT", "description": "chest"},
    )
    page = response.content.decode()
    assert response.status_code == 400
    assert "the PACS returned no Modality (nor ModalitiesInStudy)" in page
    assert 'value="CT"' in page and 'value="chest"' in page
    assert Job.objects.count() == 1  # nothing made
    # The match table says the same of its own filter.
    page = client.get(f"/jobs/{find.code}/?modality=CT").content.decode()
    assert "The PACS returned no Modality (nor ModalitiesInStudy)" in page
