"""The Search page: a search, its results, a study expanded into its series,
ticked studies or series retrieved, a search kept as a find job; access checked
for owner, viewer and outsider."""

import pytest

from pulls.cli.inline import run_inline
from pulls.models import Job, JobKind, JobStatus
from tests.pulls.retrieval_support import QUIET

pytestmark = pytest.mark.services


def _search(client, project, node, **terms):
    data = {"node": node.pk, "project": project.pk, "level": "STUDY", **terms}
    return client.post("/search/", data)


def _done(response) -> Job:
    """The search the response redirects to, worked here to its end."""
    code = response["Location"].rstrip("/").rsplit("/", 1)[-1]
    return run_inline(Job.objects.get(code=code), **QUIET)


def test_a_search_by_patient_lists_the_studies_and_stays_out_of_the_job_lists(
    client, alice, project, orthanc_node, dicom_data
):
    patient = sorted(dicom_data.patients)[0]
    client.force_login(alice)
    response = _search(client, project, orthanc_node, patient_id=patient)
    assert response.status_code == 302
    search = _done(response)
    assert search.is_search and search.kind == JobKind.FIND
    assert search.status == JobStatus.DONE
    assert list(search.items.values_list("identifier", flat=True)) == [
        {"QueryRetrieveLevel": "STUDY", "PatientID": patient}
    ]
    page = client.get(f"/search/{search.code}/").content.decode()
    studies = {i.study_instance_uid for i in dicom_data.patients[patient]}
    assert page.count('name="match"') == len(studies)
    for inst in dicom_data.patients[patient]:
        assert inst.study_description in page
    assert "Search:" not in client.get("/").content.decode()
    assert "Search:" not in client.get(f"/projects/{project.slug}/").content.decode()


def test_a_search_must_narrow_and_its_values_are_checked(client, alice, project, orthanc_node):
    client.force_login(alice)
    response = _search(client, project, orthanc_node, modality="CT")
    assert response.status_code == 400
    assert "would list the whole archive" in response.content.decode()
    response = _search(client, project, orthanc_node, patient_id="P1", modality="C/T")
    assert response.status_code == 400
    assert "code strings have only A-Z, 0-9, space and underscore" in response.content.decode()
    assert 'value="P1"' in response.content.decode()  # the form keeps what was typed
    assert not Job.objects.exists()


def test_date_shortcuts_fill_the_form(client, alice):
    client.force_login(alice)
    page = client.get("/search/").content.decode()
    assert "last 7 days" in page and "date_from=" in page


def test_a_study_expands_into_its_series_and_ticked_ones_are_retrieved(
    client, alice, project, orthanc_node, dicom_data, storage
):
    patient = sorted(dicom_data.patients)[1]
    client.force_login(alice)
    search = _done(_search(client, project, orthanc_node, patient_id=patient))
    study = sorted({i.study_instance_uid for i in dicom_data.patients[patient]})[0]
    response = client.post(f"/search/{search.code}/expand/", {"study": study})
    series_search = _done(response)
    assert series_search.follows == search
    wanted = {i.series_instance_uid for i in dicom_data.studies[study]}
    assert set(series_search.find_results.values_list("series_instance_uid", flat=True)) == wanted
    ticked = series_search.find_results.order_by("series_instance_uid").first()
    response = client.post(
        f"/search/{series_search.code}/retrieve/", {"match": [ticked.pk], "method": "get"}
    )
    assert response.status_code == 302
    retrieval = Job.objects.get(kind=JobKind.GET)
    assert retrieval.status == JobStatus.QUEUED  # started at once
    retrieval = run_inline(retrieval, **QUIET)
    assert retrieval.status == JobStatus.DONE
    on_disk = {p.stem for p in (storage / project.slug).rglob("*.dcm")}
    assert on_disk == {
        i.sop_instance_uid
        for i in dicom_data.studies[study]
        if i.series_instance_uid == ticked.series_instance_uid
    }


def test_a_search_can_be_kept_as_a_find_job(client, alice, project, orthanc_node, dicom_data):
    client.force_login(alice)
    search = _done(_search(client, project, orthanc_node, patient_id="NOBODY"))
    client.post(f"/search/{search.code}/save/", {"title": "Nobody's studies"})
    search.refresh_from_db()
    assert (search.is_search, search.title) == (False, "Nobody's studies")
    assert "Nobody&#x27;s studies" in client.get(f"/projects/{project.slug}/").content.decode()


def test_search_pages_for_owner_viewer_and_outsider(
    client, alice, bob, charlie, project, orthanc_node, dicom_data
):
    client.force_login(alice)
    search = _done(_search(client, project, orthanc_node, patient_id="NOBODY"))
    client.force_login(charlie)
    for url in ("", "expand/", "retrieve/", "save/"):
        assert client.post(f"/search/{search.code}/{url}").status_code == 404, url
        assert client.get(f"/search/{search.code}/{url}").status_code == 404, url
    client.force_login(bob)  # a viewer reads the results, changes nothing
    assert client.get(f"/search/{search.code}/").status_code == 200
    assert client.post(f"/search/{search.code}/save/", {"title": "x"}).status_code == 403
    assert client.post(f"/search/{search.code}/retrieve/", {"match": [1]}).status_code == 403
    # A node not granted cannot be chosen.
    response = _search(client, project, orthanc_node, patient_id="P1")
    assert response.status_code == 400
