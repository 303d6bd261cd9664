"""The portal in a real browser, as people use it: an operator registers a node,
a researcher finds and retrieves studies and watches them progress live.

Real parts throughout: Chromium, the Django live server, a Celery worker,
Redis, Orthanc as the PACS and the portal's storage SCP. The pages it passes
through are saved as the README's screenshots.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from pulls.models import Job, JobKind, PacsNode
from tests.browser.conftest import screenshot
from tests.conftest import Worker

pytestmark = pytest.mark.services


@pytest.fixture
def portal(
    orthanc, staging, flushable_db, redis_url, sandbox, settings, tmp_path, operator, alice,
    bob, charlie, project, dicom_data,
):  # fmt: skip
    """The worker and the live server share the database, Redis and storage."""
    storage = tmp_path / "storage"
    settings.PACSNPULL_STORAGE_ROOT = storage
    settings.PACSNPULL_STAGING_DIR = staging
    worker = Worker(
        redis_url=redis_url,
        log_path=sandbox / "browser-worker.log",
        env={
            "PACSNPULL_STAGING_DIR": str(staging),
            "PACSNPULL_STORAGE_ROOT": str(storage),
            "PACSNPULL_ARRIVAL_WAIT_SECONDS": "1",
        },
    ).start()
    try:
        yield worker
    finally:
        worker.stop()


def _register_node(page, orthanc) -> None:
    """The operator registers Orthanc in the admin and grants it to alice."""
    page.goto("/admin/pulls/pacsnode/add/")
    page.get_by_label("Name:", exact=True).fill("ORTHANC")
    page.get_by_label("Called AE title:").fill(orthanc.aet)
    page.get_by_label("Host:").fill("127.0.0.1")
    page.get_by_label("Port:").fill(str(orthanc.dicom_port))
    # One query every 3 s: the find's progress stays between its first and its
    # last row for 9 s or more (a lower bound: a busy machine only stretches
    # it), several of the page's 2 s refreshes however slowly they come.
    page.get_by_label("Queries per minute:").fill("20")
    page.locator("#id_granted_users_from").select_option(label="alice")
    page.locator("#id_granted_users_add").click()
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")


def test_operator_and_researcher_through_the_portal(
    portal, new_page, orthanc, dicom_data, tmp_path
):
    # --- The operator: dashboard, register a node, echo it. -------------------
    olivia = new_page("olivia", "operator-password-1")
    expect(olivia.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(olivia.get_by_text("No PACS node is available to you yet")).to_be_visible()
    _register_node(olivia, orthanc)
    olivia.goto("/nodes/")
    olivia.get_by_role("link", name="ORTHANC").click()
    olivia.get_by_role("button", name="Echo").click()
    expect(olivia.get_by_role("alert")).to_contain_text("ORTHANC: C-ECHO succeeded")
    expect(olivia.locator("#last-echo")).to_contain_text("OK")
    screenshot(olivia, "node")

    # --- The researcher: a file with a mistake is refused inline. ------------
    alice = new_page("alice", "alice-password-1")
    alice.get_by_role("link", name="New job").first.click()
    bad = tmp_path / "bad.csv"
    bad.write_text("QueryRetrieveLevel,PatientID,StudyDate\nSTUDY,P1,2020-13-45\n")
    alice.get_by_label("Query file").set_input_files(str(bad))
    alice.get_by_role("button", name="Check the file and preview").click()
    errors = alice.locator(".alert-danger, .invalid-feedback").first
    expect(errors).to_contain_text("bad.csv: nothing was saved")
    expect(alice.locator("main")).to_contain_text("row 1, StudyDate: '2020-13-45' is written")
    screenshot(alice, "new-job-errors")
    assert not Job.objects.exists()

    # --- A find job: preview, start, progress moving without a reload. -------
    patients = sorted(dicom_data.patients)
    assert len(patients) >= 3
    good = tmp_path / "patients.csv"
    good.write_text("QueryRetrieveLevel,PatientID\n" + "".join(f"STUDY,{p}\n" for p in patients))
    alice.get_by_label("Query file").set_input_files(str(good))
    alice.get_by_label("Title").fill("Every patient")
    alice.get_by_role("button", name="Check the file and preview").click()
    expect(alice.get_by_role("alert").first).to_contain_text(f"{len(patients)} rows are valid")
    expect(alice.locator("#job-state")).to_have_text("Draft (not started)")
    alice.get_by_role("button", name="Start the job").click()
    expect(alice.locator("#job-state")).to_have_text(re.compile("Queued|Running|throttled"))
    alice.evaluate("window.__samePage = true")  # gone if the page reloads
    alice.wait_for_function(
        """(total) => {
            const done = /(\\d+) done/.exec(document.querySelector('#job-counts').textContent);
            return window.__samePage === true
                && document.querySelector('#job-progress').dataset.liveUpdated
                && done && +done[1] > 0 && +done[1] < total;
        }""",
        arg=len(patients),
        timeout=60_000,
    )
    screenshot(alice, "find-running")
    expect(alice.locator("#job-state")).to_have_text("Done", timeout=60_000)
    find = Job.objects.get(kind=JobKind.FIND)
    expect(alice.locator("#job-matches")).to_have_text(str(find.matches))
    assert find.matches == len({i.study_instance_uid for p in patients
                                for i in dicom_data.patients[p]})  # fmt: skip
    screenshot(alice, "find-done")

    # --- Retrieve the matches; count the instances; download the manifest. ---
    alice.get_by_role("button", name="Create the retrieval job").click()
    expect(alice.get_by_role("alert").first).to_contain_text(f"{find.matches} items to retrieve")
    alice.get_by_role("button", name="Start the job").click()
    expected = sum(len(dicom_data.patients[p]) for p in patients)
    expect(alice.locator("#job-state")).to_have_text("Done", timeout=120_000)
    expect(alice.locator("#job-instances")).to_have_text(str(expected))
    screenshot(alice, "retrieval-done")
    with alice.expect_download() as download:
        alice.get_by_role("link", name="Download the manifest (CSV)").click()
    with open(download.value.path(), newline="") as fh:
        manifest = list(csv.DictReader(fh))
    wanted = {i.sop_instance_uid for p in patients for i in dicom_data.patients[p]}
    assert {row["SOPInstanceUID"] for row in manifest} == wanted
    retrieval = Job.objects.exclude(kind=JobKind.FIND).get()

    alice.goto("/")
    expect(alice.locator("#dashboard-live")).to_contain_text("Every patient")
    # The test's worker says it is alive, with the queues it serves.
    expect(alice.locator("#dashboard-live")).to_contain_text("queues bulk, interactive")
    screenshot(alice, "dashboard")
    alice.goto(f"/projects/{retrieval.project.slug}/")
    expect(alice.locator("#project-instances")).to_contain_text(f"{expected} in")
    screenshot(alice, "project")
    alice.goto("/accounts/")
    screenshot(alice, "account")

    # --- Others: an outsider cannot open the job; the operator sees the log. --
    charlie = new_page("charlie", "charlie-password-1")
    response = charlie.goto(f"/jobs/{retrieval.code}/")
    assert response.status == 404
    response = charlie.goto(f"/jobs/{retrieval.code}/manifest.csv")
    assert response.status == 404
    bob = new_page("bob", "bob-password-1")  # a viewer sees the job but cannot change it
    bob.goto(f"/jobs/{retrieval.code}/")
    expect(bob.locator("#job-state")).to_have_text("Done")
    expect(bob.get_by_role("button", name="Cancel")).to_have_count(0)

    olivia.goto("/audit/")
    olivia.get_by_label("Action").select_option(label="C-MOVE")
    olivia.get_by_role("button", name="Filter").click()
    expect(olivia.locator("main")).to_contain_text(f"{find.matches} events")
    olivia.goto("/audit/")
    expect(olivia.locator("main")).to_contain_text("node ORTHANC granted to users alice")
    screenshot(olivia, "audit")
    assert PacsNode.objects.get(name="ORTHANC").last_echo_ok


def test_a_pasted_list_and_its_failed_rows_round_trip(
    portal, new_page, orthanc_node, dicom_data, tmp_path
):
    """A researcher pastes accession numbers, one of them wrong; the find ends
    with that row matching nothing; she downloads it as a file with the reason,
    corrects it, and uploads it as a job that follows the first."""
    studies = list(dicom_data.studies.values())
    good = [studies[0][0].accession_number, studies[1][0].accession_number]
    alice = new_page("alice", "alice-password-1")
    alice.goto("/jobs/new/")
    alice.get_by_label("…or paste a list, one value per line").fill(
        f"{good[0]}\nNO-SUCH-ACC\n{good[1]}\n{good[0]}\n"
    )
    alice.get_by_label("The lines are").select_option("AccessionNumber")
    alice.get_by_label("Title").fill("Pasted")
    alice.get_by_role("button", name="Check the file and preview").click()
    expect(alice.get_by_role("alert").first).to_contain_text("3 rows are valid")
    expect(alice.get_by_role("alert").first).to_contain_text("row 4 (as row 1)")
    alice.get_by_role("button", name="Start the job").click()
    expect(alice.locator("#job-state")).to_have_text("Done", timeout=60_000)
    expect(alice.locator("main")).to_contain_text("1 row failed or matched nothing")
    with alice.expect_download() as download:
        alice.get_by_role("link", name="Download the rows (CSV)").click()
    with open(download.value.path(), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(row["AccessionNumber"], row["#reason"]) for row in rows] == [
        ("NO-SUCH-ACC", "matched nothing")
    ]
    corrected = tmp_path / "corrected.csv"
    corrected.write_text(Path(download.value.path()).read_text().replace("NO-SUCH-ACC", good[1]))
    first = Job.objects.get()
    alice.get_by_role("link", name="Upload the corrected file").click()
    alice.get_by_label("Query file").set_input_files(str(corrected))
    alice.get_by_role("button", name="Check the file and preview").click()
    expect(alice.locator("main")).to_contain_text("corrects the rows of")
    alice.get_by_role("button", name="Start the job").click()
    expect(alice.locator("#job-state")).to_have_text("Done", timeout=60_000)
    follower = Job.objects.exclude(pk=first.pk).get()
    assert follower.follows == first and follower.matches == 1


def test_search_expand_tick_and_retrieve(portal, new_page, orthanc_node, dicom_data, tmp_path):
    """The Search page in a browser: a patient's studies within seconds, one
    study expanded into its series, one series ticked and retrieved by C-GET;
    its files arrive in the project."""
    from django.conf import settings

    patient = sorted(dicom_data.patients)[2]
    study = sorted({i.study_instance_uid for i in dicom_data.patients[patient]})[0]
    alice = new_page("alice", "alice-password-1")
    alice.get_by_role("link", name="Search").click()
    alice.get_by_label("Patient ID").fill(patient)
    alice.get_by_role("button", name="Search").click()
    results = alice.locator("#search-results")
    expect(results).to_be_visible(timeout=60_000)
    studies = {i.study_instance_uid for i in dicom_data.patients[patient]}
    expect(results.locator("tbody tr")).to_have_count(len(studies))
    screenshot(alice, "search")
    row = results.locator("tr", has_text=dicom_data.studies[study][0].study_description).first
    row.get_by_role("button", name="Series").click()
    expect(alice.get_by_role("heading", name=re.compile("series of"))).to_be_visible()
    series = alice.locator("#search-results")
    expect(series.locator("tbody tr")).to_have_count(
        len({i.series_instance_uid for i in dicom_data.studies[study]}), timeout=60_000
    )
    series.locator("input[name=match]").first.check()
    alice.get_by_label(re.compile("Retrieve the ticked series with")).select_option("get")
    alice.get_by_role("button", name=re.compile("Retrieve into")).click()
    expect(alice.locator("#job-state")).to_have_text("Done", timeout=120_000)
    retrieval = Job.objects.get(kind=JobKind.GET)
    files = list((settings.PACSNPULL_STORAGE_ROOT / retrieval.project.slug).rglob("*.dcm"))
    ticked = retrieval.items.get().identifier["SeriesInstanceUID"]
    assert {p.stem for p in files} == {
        i.sop_instance_uid for i in dicom_data.studies[study] if i.series_instance_uid == ticked
    }


def test_a_pseudonymised_project_from_making_it_to_its_mapping(
    portal, new_page, orthanc_node, dicom_data
):
    """A researcher makes a pseudonymised project, searches a patient and
    retrieves a study into it by C-GET: its files carry a pseudonym (the folder
    and the PatientID), the project page says what is done to them, and its
    owner opens and downloads the mapping, each look in the audit log."""
    from django.conf import settings
    from pydicom import dcmread

    from pulls.models import AuditAction, AuditEvent, Project

    patient = sorted(dicom_data.patients)[1]
    study = sorted({i.study_instance_uid for i in dicom_data.patients[patient]})[0]
    alice = new_page("alice", "alice-password-1")
    alice.get_by_role("link", name="Projects").click()
    alice.get_by_role("link", name="New project").click()
    alice.get_by_label("Name").fill("Lung cohort")
    alice.get_by_label("Slug").fill("lung-cohort")
    expect(alice.get_by_role("radio", name=re.compile("^Pseudonymised"))).to_be_checked()
    alice.get_by_role("button", name="Create the project").click()
    expect(alice.locator("#project-deidentification")).to_contain_text("Pseudonymised")

    alice.get_by_role("link", name="Search").click()
    alice.get_by_label("Project").select_option(label="Lung cohort")
    alice.get_by_label("Patient ID").fill(patient)
    alice.get_by_role("button", name="Search").click()
    results = alice.locator("#search-results")
    expect(results.locator("tbody tr")).to_have_count(
        len({i.study_instance_uid for i in dicom_data.patients[patient]}), timeout=60_000
    )
    row = results.locator("tr", has_text=dicom_data.studies[study][0].study_description).first
    row.locator("input[name=match]").check()
    alice.get_by_label(re.compile("Retrieve the ticked")).select_option("get")
    alice.get_by_role("button", name=re.compile("Retrieve into")).click()
    expect(alice.locator("#job-state")).to_have_text("Done", timeout=120_000)

    project = Project.objects.get(slug="lung-cohort")
    files = list((settings.PACSNPULL_STORAGE_ROOT / project.slug).rglob("*.dcm"))
    assert len(files) == len(dicom_data.studies[study])
    pseudonym = {p.relative_to(settings.PACSNPULL_STORAGE_ROOT / project.slug).parts[0]
                 for p in files}  # fmt: skip
    assert len(pseudonym) == 1 and patient not in pseudonym
    assert {dcmread(p, stop_before_pixels=True).PatientID for p in files} == pseudonym

    alice.goto(f"/projects/{project.slug}/")
    alice.get_by_role("link", name="Pseudonyms (owners only)").click()
    mapping = alice.locator("#mapping")
    expect(mapping).to_contain_text(patient)
    expect(mapping).to_contain_text(next(iter(pseudonym)))
    screenshot(alice, "pseudonyms")
    with alice.expect_download() as download:
        alice.get_by_role("link", name="Download the mapping (CSV)").click()
    rows = list(csv.reader(Path(download.value.path()).read_text().splitlines()))
    assert rows[1][:2] == [patient, next(iter(pseudonym))]
    assert AuditEvent.objects.filter(action=AuditAction.MAPPING, project=project).count() == 2


def test_a_researcher_downloads_ticked_studies_and_sends_a_job_on(
    portal, new_page, orthanc_node, dicom_data, destination_orthanc, alice, project
):
    """A finished retrieval: the researcher ticks a row and downloads its study
    as ZIP (read back: the project's layout and the manifest), then sends the
    job's files to a research PACS (a second Orthanc) and sees them arrive."""
    import io
    import zipfile

    from pulls.cli.inline import run_inline
    from pulls.models import AuditAction, AuditEvent
    from tests.conftest import clear_orthanc, make_node, retrieval_job

    clear_orthanc(destination_orthanc)
    studies = sorted(dicom_data.studies)[:2]
    job = run_inline(retrieval_job(alice, project, orthanc_node, studies, kind="get"),
                     on_progress=lambda job: None)  # fmt: skip
    destination = make_node("RESEARCH-PACS", destination_orthanc.dicom_port, "RESEARCH",
                            is_destination=True)  # fmt: skip
    destination.granted_users.add(alice)
    second = job.items.get(row=2).identifier["StudyInstanceUID"]

    page = new_page("alice", "alice-password-1")
    page.goto(f"/jobs/{job.code}/")
    page.get_by_label("Tick row 2").check()
    with page.expect_download() as download:
        page.get_by_role("button", name="Download the files of the ticked rows (ZIP)").click()
    archive = zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes()))
    dicoms = [name for name in archive.namelist() if name.endswith(".dcm")]
    assert len(dicoms) == len(dicom_data.studies[second])
    assert all(f"/{second}/" in name for name in dicoms)
    assert any(name.endswith("/manifest.csv") for name in archive.namelist())
    assert AuditEvent.objects.filter(action=AuditAction.DOWNLOAD, job=job, actor=alice).exists()

    page.get_by_label("Send to").select_option(label="RESEARCH-PACS (RESEARCH)")
    page.get_by_role("button", name="Send the files").click()
    expect(page.locator(".alert-success")).to_contain_text("2 studies are queued")
    page.reload()
    sendings = page.locator("#sendings")
    for _ in range(60):
        if "Done" in sendings.inner_text():
            break
        page.wait_for_timeout(1000)
        page.reload()
    expect(sendings).to_contain_text("Done")
    expect(sendings).to_contain_text("2 / 2")
    screenshot(page, "delivery")
    assert destination_orthanc.instance_count() == job.instances_received


def test_a_researcher_makes_an_api_token_uses_it_and_revokes_it(portal, new_page, live_server):
    """Made on the account page and shown once; it works for a script; revoked,
    it no longer does."""
    import httpx

    page = new_page("alice", "alice-password-1")
    page.get_by_role("link", name="alice").click()
    page.get_by_label("What it is for").fill("notebook")
    page.get_by_label("Scope").select_option("write")
    page.get_by_role("button", name="Make a token").click()
    shown = page.locator("#new-token code")
    expect(shown).to_contain_text("pnp_")
    token = shown.inner_text().strip()
    screenshot(page, "api-token")
    headers = {"Authorization": f"Bearer {token}"}
    answer = httpx.get(f"{live_server.url}/api/v1/projects/", headers=headers)
    assert answer.status_code == 200 and answer.json()[0]["name"] == "Lung study"

    page.goto("/api/v1/jobs/")  # the browsable API, logged in (and within the CSP)
    expect(page.locator("h1")).to_contain_text("Job List")
    page.goto("/accounts/")  # shown once: gone on the next visit, listed by its prefix
    expect(page.locator("#new-token")).to_have_count(0)
    expect(page.locator("#tokens")).to_contain_text(token[:12])
    page.get_by_role("button", name=f"Revoke {token[:12]}").click()
    expect(page.locator("#tokens")).to_contain_text("revoked")
    assert httpx.get(f"{live_server.url}/api/v1/projects/", headers=headers).status_code == 401
