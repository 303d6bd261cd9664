"""DICOMweb nodes: finds by QIDO-RS, retrievals by WADO-RS from Orthanc's
DICOMweb plugin (Debian's orthanc-dicomweb), through the same runner, limits,
placement, pseudonymisation and audit as DIMSE; and what a person reads when
the server refuses, throttles, fails or cuts a response short."""

import os
import time

import pytest
import requests
from django.utils import timezone
from pydicom import dcmread
from pydicom.dataset import Dataset

from pulls.cli.inline import run_inline
from pulls.dicomweb.credentials import secret_seal
from pulls.models import (
    AuditAction,
    AuditEvent,
    FindResult,
    ItemStatus,
    Job,
    JobStatus,
    PacsNode,
    Protocol,
    RetrievedInstance,
    WebAuth,
)
from pulls.sandbox.orthanc import Orthanc
from pulls.services import node_echo
from tests.conftest import find_job, retrieval_job
from tests.pulls.leaks import collect, leaks
from tests.pulls.retrieval_support import QUIET
from tests.pulls.test_engine import dataset_bytes
from tests.pulls.test_pseudonymisation import BURNED_IN, _by_patient, _outputs
from tests.pulls.test_real_archives import _on_disk
from tests.pulls.web_faults import Fault, FaultyServer

pytestmark = pytest.mark.services


@pytest.fixture
def web_orthanc(corpus_orthanc):
    """The real-archive corpus's Orthanc, by its DICOMweb plugin."""
    return corpus_orthanc


def web_node(alice, base_url: str, **fields) -> PacsNode:
    fields.setdefault("queries_per_minute", 0)
    node = PacsNode(
        name=fields.pop("name", "WEB"), protocol=Protocol.DICOMWEB, base_url=base_url,
        connect_timeout=5, network_timeout=30, **fields,
    )  # fmt: skip
    node.full_clean()
    node.save()
    node.granted_users.add(alice)
    return node


@pytest.fixture
def faulty(web_orthanc):
    server = FaultyServer(upstream=web_orthanc.url).start()
    yield server
    server.stop()


def dataset_bytes_of(data: bytes) -> bytes:
    """The data set of a DICOM file's bytes (after its preamble and file meta)."""
    meta_end = 144 + int.from_bytes(data[140:144], "little")
    return data[meta_end:]


def _studies(corpus) -> list[str]:
    """The corpus's study UIDs, the smallest studies first."""
    return sorted(corpus.studies, key=lambda uid: (len(corpus.studies[uid]), uid))


def test_a_dicomweb_node_takes_its_host_and_port_from_its_url_and_needs_no_ae_title(db):
    node = PacsNode(
        name="cloud", protocol=Protocol.DICOMWEB, base_url="https://pacs.example.org/dicom-web"
    )
    node.full_clean()
    node.save()
    assert (node.host, node.port, node.ae_title) == ("pacs.example.org", 443, "")
    assert str(node) == "cloud (https://pacs.example.org/dicom-web)"
    with pytest.raises(Exception, match="needs its base URL"):
        PacsNode(name="x", protocol=Protocol.DICOMWEB).full_clean()
    with pytest.raises(Exception, match="needs its AE title"):
        PacsNode(name="y", host="h", port=104).full_clean()


def test_every_instance_of_a_real_archive_arrives_by_wado_rs_as_orthanc_holds_it(
    storage, alice, project, corpus, web_orthanc
):
    """Byte for byte as stored (compressed ones not converted), each file with
    its own transfer syntax, recorded, and the job's rows done; the job says
    what it did in DICOMweb's words."""
    node = web_node(alice, f"{web_orthanc.url}/dicom-web")
    job = retrieval_job(alice, project, node, corpus.studies, kind="move")
    assert job.kind == "get"  # DICOMweb has no C-MOVE: its retrievals come on the connection
    assert job.get_kind_display() == "Retrieve (WADO-RS)"
    job = run_inline(job, **QUIET)
    errors = list(job.items.exclude(status=ItemStatus.DONE).values_list("error_message", flat=True))
    assert job.status == JobStatus.DONE, errors
    on_disk = _on_disk(storage, project)
    assert set(on_disk) == set(corpus.by_sop())
    for inst in corpus.instances:
        path, syntax = on_disk[inst.sop_instance_uid]
        assert syntax == inst.transfer_syntax, inst.label
        assert dataset_bytes(path) == dataset_bytes(corpus.root / inst.path), inst.label
    assert RetrievedInstance.objects.filter(project=project).count() == len(corpus.instances)
    events = AuditEvent.objects.filter(job=job, action=AuditAction.GET)
    assert events.count() == len(corpus.studies) and all(e.success for e in events)


def test_a_find_by_qido_rs_returns_every_name_as_the_server_holds_it(
    storage, alice, project, corpus, web_orthanc
):
    """Names in every script, exactly as the server's own JSON answer has them
    (Orthanc 1.10 garbles the one in ISO 2022 IR 13 with IR 87 in its JSON: the
    others match the corpus), with a wildcard in the matching key."""
    node = web_node(alice, f"{web_orthanc.url}/dicom-web")
    rows = [{"QueryRetrieveLevel": "STUDY", "PatientID": "CORPUS-CS*"}]
    job = run_inline(find_job(alice, project, node, rows, start=True), **QUIET)
    assert job.status == JobStatus.DONE
    assert job.get_kind_display() == "Find (QIDO-RS)"
    results = FindResult.objects.filter(job=job)
    names = {r.patient_id: r.attributes["PatientName"] for r in results}
    url = f"{web_orthanc.url}/dicom-web/studies?PatientID=CORPUS-CS*"
    answer = requests.get(url, timeout=30).json()
    server_says = {str(ds.PatientID): str(ds.PatientName) for ds in map(Dataset.from_json, answer)}
    assert names == server_says and len(names) == 13
    held = {i.patient_id: i.patient_name for i in corpus.instances}
    assert sum(names[pid] == held[pid] for pid in names) >= 12
    for r in results:
        held_in_study = [
            i for i in corpus.instances if i.study_instance_uid == r.study_instance_uid
        ]
        assert int(r.attributes["NumberOfStudyRelatedInstances"]) == len(held_in_study)


def test_echo_of_a_dicomweb_node_is_a_qido_rs_search(alice, web_orthanc, faulty):
    node = web_node(alice, f"{web_orthanc.url}/dicom-web")
    assert node_echo(node=node, user=alice).startswith("QIDO-RS search succeeded in")
    wrong = web_node(alice, f"{web_orthanc.url}/no-such-path", name="WRONG")
    message = node_echo(node=wrong, user=alice)
    assert "HTTP 404" in message and "check its base URL" in message
    assert AuditEvent.objects.filter(action=AuditAction.ECHO, node=wrong, success=False).exists()


def test_credentials_are_sealed_sent_and_a_refusal_says_to_check_them(
    storage, alice, project, corpus, faulty, monkeypatch
):
    faulty.authorization = "Bearer s3cret-token"
    node = web_node(alice, faulty.url, web_auth=WebAuth.BEARER, web_secret=secret_seal("wrong"))
    assert "s3cret" not in node.web_secret and "wrong" not in node.web_secret
    job = run_inline(retrieval_job(alice, project, node, _studies(corpus)[:1], kind="get"), **QUIET)
    item = job.items.get()
    assert item.status == ItemStatus.FAILED and item.attempts == 1  # not retried
    assert "credentials" in item.error_message and "HTTP 401" in item.error_message
    # From the environment, as an operator may prefer: that one is used.
    monkeypatch.setenv("PACS_TOKEN_TEST", "s3cret-token")
    PacsNode.objects.filter(pk=node.pk).update(web_secret_env="PACS_TOKEN_TEST")
    job = run_inline(retrieval_job(alice, project, node, _studies(corpus)[:1], kind="get"), **QUIET)
    assert job.status == JobStatus.DONE, job.items.get().error_message
    # Basic: user name and the sealed password.
    faulty.authorization = "Basic cmVzZWFyY2g6cGFzcw=="  # research:pass
    PacsNode.objects.filter(pk=node.pk).update(
        web_secret_env="", web_auth=WebAuth.BASIC, web_username="research",
        web_secret=secret_seal("pass"),
    )  # fmt: skip
    assert node_echo(node=PacsNode.objects.get(pk=node.pk), user=alice).startswith("QIDO-RS")
    monkeypatch.delenv("PACS_TOKEN_TEST")
    PacsNode.objects.filter(pk=node.pk).update(web_secret_env="PACS_TOKEN_TEST")
    message = node_echo(node=PacsNode.objects.get(pk=node.pk), user=alice)
    assert "PACS_TOKEN_TEST" in message and "not set" in message


def test_a_server_that_asks_to_wait_is_waited_for(storage, alice, project, corpus, faulty):
    """429 with a short Retry-After: waited in place, and the row is done;
    with a long one, the row waits that long (not_before), saying so."""
    node = web_node(alice, faulty.url)
    faulty.faults = [Fault(status=429, retry_after="1", path_contains="/studies/")]
    job = run_inline(retrieval_job(alice, project, node, _studies(corpus)[:1], kind="get"), **QUIET)
    assert job.status == JobStatus.DONE, job.items.get().error_message
    faulty.faults = [Fault(status=503, retry_after="3600", path_contains="/studies/")]
    job = retrieval_job(alice, project, node, _studies(corpus)[1:2], kind="get", start=True)
    from pulls.workers import runner

    runner.run_chunk(list(job.items.values_list("pk", flat=True)))
    item = job.items.get()
    assert item.status == ItemStatus.PENDING
    assert (
        "HTTP 503" in item.error_message and "in 3600 s, as the server asks" in item.error_message
    )
    assert item.not_before > timezone.now() + timezone.timedelta(seconds=3500)


def test_a_response_cut_in_the_middle_places_nothing_half_and_the_row_is_retried(
    storage, settings, alice, project, corpus, faulty
):
    study = max(corpus.studies, key=lambda uid: len(corpus.studies[uid]))
    wanted = {i.sop_instance_uid for i in corpus.instances if i.study_instance_uid == study}
    node = web_node(alice, faulty.url)
    faulty.faults = [Fault(cut_after=20000, path_contains=f"/studies/{study}")]
    job = retrieval_job(alice, project, node, [study], kind="get", start=True)
    from pulls.workers import runner

    runner.run_chunk(list(job.items.values_list("pk", flat=True)))
    item = job.items.get()
    assert item.status == ItemStatus.PENDING, item.error_message
    assert "was cut after" in item.error_message and "retried" in item.error_message
    assert not _on_disk(storage, project)  # nothing placed
    incoming = settings.PACSNPULL_STAGING_DIR / ".incoming"
    assert not [n for n in os.listdir(incoming) if "web-" in n]  # no part-written file
    job = run_inline(job, **QUIET)
    assert job.status == JobStatus.DONE
    assert set(_on_disk(storage, project)) == wanted


def test_a_refusal_fails_the_row_and_names_the_status(storage, alice, project, corpus, faulty):
    node = web_node(alice, faulty.url)
    faulty.faults = [Fault(status=404, path_contains="/studies/")]
    job = run_inline(retrieval_job(alice, project, node, _studies(corpus)[:1], kind="get"), **QUIET)
    item = job.items.get()
    assert item.status == ItemStatus.FAILED
    assert "HTTP 404" in item.error_message and "not found" in item.error_message
    faulty.faults = [Fault(status=500, times=9)]
    job = run_inline(retrieval_job(alice, project, node, _studies(corpus)[:1], kind="get"), **QUIET)
    item = job.items.get()
    assert item.status == ItemStatus.FAILED and "gave up after" in item.error_message
    assert "HTTP 500" in item.error_message
    assert faulty.faults[0].times == 9 - 3  # a request an attempt: a 500 is not waited for


@pytest.fixture(scope="session")
def web_destination(sandbox):
    """An empty Orthanc that takes files by STOW-RS."""
    pacs = Orthanc(sandbox / "stow-orthanc", aet="STOWDEST", dicomweb=True).start()
    try:
        yield pacs
    finally:
        pacs.stop()


def test_files_are_sent_to_a_stow_rs_destination_as_they_are_stored(
    storage, alice, project, corpus, web_orthanc, web_destination
):
    """Every file of a job, compressed or not, at the destination byte for byte
    as the project holds it, counted there by QIDO-RS, one audit event a study;
    a destination that refuses the portal's credentials fails the study saying so."""
    from pulls.delivery import sending

    web_destination.clear()
    source = web_node(alice, f"{web_orthanc.url}/dicom-web")
    job = run_inline(
        retrieval_job(alice, project, source, _studies(corpus)[:6], kind="get"), **QUIET
    )
    assert job.status == JobStatus.DONE
    destination = web_node(
        alice, f"{web_destination.url}/dicom-web", name="STOW", is_destination=True
    )
    made = sending.sending_create(project=project, destination=destination, user=alice, job=job)
    assert sending.sending_run(made.pk) is None
    made.refresh_from_db()
    studies = list(made.studies.all())
    assert all(s.status == "done" for s in studies), [s.message for s in studies]
    assert all(s.instances_at_destination == s.instances_expected for s in studies)
    on_disk = _on_disk(storage, project)
    held = web_destination.get("/instances")
    assert len(held) == len(on_disk) == job.instances_received
    for orthanc_id in held:
        uid = web_destination.get(f"/instances/{orthanc_id}/simplified-tags")["SOPInstanceUID"]
        assert dataset_bytes_of(web_destination.instance_file(orthanc_id)) == dataset_bytes(
            on_disk[uid][0]
        )
    sent = AuditEvent.objects.filter(action=AuditAction.SEND, job=job, success=True)
    assert sent.count() == len(studies) + 1  # one when queued, then one a study


def test_a_stow_rs_destination_that_refuses_the_credentials_fails_saying_so(
    storage, alice, project, corpus, web_orthanc, faulty
):
    from pulls.delivery import sending

    source = web_node(alice, f"{web_orthanc.url}/dicom-web")
    job = run_inline(
        retrieval_job(alice, project, source, _studies(corpus)[:1], kind="get"), **QUIET
    )
    faulty.authorization = "Bearer right"
    destination = web_node(
        alice, faulty.url, name="STOW", is_destination=True, web_auth=WebAuth.BEARER,
        web_secret=secret_seal("wrong"),
    )  # fmt: skip
    made = sending.sending_create(project=project, destination=destination, user=alice, job=job)
    sending.sending_run(made.pk)
    study = made.studies.get()
    assert study.status == "failed" and study.attempts == 1
    assert "HTTP 401" in study.message and "credentials" in study.message


def test_nothing_identifying_enters_a_pseudonymised_project_by_wado_rs(
    storage, owner, pseudonymised, corpus, web_orthanc
):
    """The leak scan of the DIMSE retrievals, over the corpus retrieved by
    WADO-RS: the same de-identification on the way in, nothing of the
    originals in any byte or path of the project."""
    node = web_node(owner, f"{web_orthanc.url}/dicom-web")
    job = run_inline(retrieval_job(owner, pseudonymised, node, corpus.studies, kind="get"), **QUIET)
    errors = list(job.items.exclude(status=ItemStatus.DONE).values_list("error_message", flat=True))
    assert job.status == JobStatus.DONE, errors
    outputs = _outputs(storage, pseudonymised)
    assert len(outputs) == len([i for i in corpus.instances if i.label not in BURNED_IN])
    shifts, by_patient = _by_patient(pseudonymised, storage)
    found = leaks(
        collect(corpus.files()), storage / pseudonymised.slug, shifts=shifts, outputs_of=by_patient
    )
    assert found == []
    assert all(dcmread(path).PatientIdentityRemoved == "YES" for path in outputs)


def test_a_suspended_dicomweb_node_is_sent_nothing(storage, alice, project, corpus, faulty):
    node = web_node(alice, faulty.url, suspended=True)
    job = retrieval_job(alice, project, node, _studies(corpus)[:1], kind="get", start=True)
    from pulls.workers import runner

    message = runner.run_chunk(list(job.items.values_list("pk", flat=True)))
    assert "suspended" in message
    assert job.items.get().status == ItemStatus.PENDING
    assert faulty.seen == []  # not one request


def test_an_operator_makes_a_dicomweb_node_in_the_admin_and_its_secret_never_shows(
    client, operator, alice
):
    client.force_login(operator)
    data = {
        "name": "CLOUD", "protocol": "dicomweb", "base_url": "https://pacs.example.org/dicom-web",
        "web_auth": "basic", "web_username": "research", "new_secret": "pa55-word",
        "query_model": "S", "retrieve_method": "move", "character_set": "ISO_IR 192",
        "connect_timeout": 10, "acse_timeout": 30, "dimse_timeout": 60, "network_timeout": 120,
        "max_associations": 2, "queries_per_minute": 120, "retrievals_per_hour": 0,
        "stall_limit": 10, "result_cap": 0, "is_active": "on",
    }  # fmt: skip
    response = client.post("/admin/pulls/pacsnode/add/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    node = PacsNode.objects.get(name="CLOUD")
    assert (node.host, node.port) == ("pacs.example.org", 443)
    assert node.web_secret and "pa55" not in node.web_secret
    from pulls.dicomweb.credentials import node_secret

    assert node_secret(node) == "pa55-word"
    page = client.get(f"/admin/pulls/pacsnode/{node.pk}/change/").content.decode()
    assert "pa55" not in page and node.web_secret not in page
    created = AuditEvent.objects.get(action=AuditAction.NODE_CHANGED, node=node)
    assert "pa55" not in str(created.details) and node.web_secret not in str(created.details)
    assert created.details["created"]["web_secret"] == "(set)"
    # A DIMSE node without its address is refused, saying what is missing.
    response = client.post("/admin/pulls/pacsnode/add/", {**data, "name": "X", "protocol": "dimse"})
    assert response.status_code == 200
    assert "A DIMSE node needs its AE title" in response.content.decode()
    # The node's page says how it is reached.
    node.granted_users.add(alice)
    client.force_login(alice)
    page = client.get(f"/nodes/{node.code}/").content.decode()
    assert "QIDO-RS" in page and "https://pacs.example.org/dicom-web" in page and "pa55" not in page


def test_a_dicomweb_node_s_limits_hold_its_requests_back(storage, alice, project, corpus, faulty):
    """Queries per minute space its QIDO-RS searches (never closer than the
    limit allows: a busy machine only sends them later); concurrent requests
    and retrievals per hour hold rows back, saying so."""
    from pulls.limits import throttle
    from pulls.workers import runner

    node = web_node(alice, faulty.url, queries_per_minute=120)  # one every 0.5 s
    rows = [{"QueryRetrieveLevel": "STUDY", "PatientID": f"CORPUS-CS0{n}"} for n in range(1, 5)]
    started = time.monotonic()  # no slot of the job is earlier
    job = run_inline(find_job(alice, project, node, rows, start=True), **QUIET)
    assert job.status == JobStatus.DONE and job.matches == 4
    searches = [at for method, path, _, at in faulty.seen if "/studies?" in path]
    assert len(searches) == 4
    assert all(at - started >= n * 0.5 - 0.05 for n, at in enumerate(searches))

    PacsNode.objects.filter(pk=node.pk).update(queries_per_minute=0, max_associations=1)
    node.refresh_from_db()
    held = throttle.association_slot(node, ttl=60, interactive=False)
    try:
        job = retrieval_job(alice, project, node, _studies(corpus)[:1], kind="get", start=True)
        message = runner.run_chunk(list(job.items.values_list("pk", flat=True)))
    finally:
        held.release()
    assert "allows 1 concurrent requests and all are in use" in message
    assert job.items.get().attempts == 0  # given back untouched

    PacsNode.objects.filter(pk=node.pk).update(max_associations=2, retrievals_per_hour=1)
    job = retrieval_job(alice, project, node, _studies(corpus)[:2], kind="get", start=True)
    runner.run_chunk(list(job.items.values_list("pk", flat=True)))
    statuses = sorted(job.items.values_list("status", flat=True))
    assert statuses == [ItemStatus.DONE, ItemStatus.PENDING]
    job.refresh_from_db()
    assert "allows 1 retrievals per hour" in job.waiting_reason


def test_retrieve_these_on_a_dicomweb_node_offers_wado_rs_and_makes_its_job(
    client, storage, alice, project, web_orthanc
):
    node = web_node(alice, f"{web_orthanc.url}/dicom-web")
    rows = [{"QueryRetrieveLevel": "STUDY", "PatientID": "CORPUS-CS01"}]
    find = run_inline(find_job(alice, project, node, rows, start=True), **QUIET)
    client.force_login(alice)
    page = client.get(f"/jobs/{find.code}/").content.decode()
    assert "Find (QIDO-RS)" in page
    assert '<option value="get" selected>WADO-RS</option>' in page
    assert ">C-MOVE<" not in page and ">C-GET<" not in page
    response = client.post(f"/jobs/{find.code}/retrieve/", {"method": "get", "level": "STUDY"})
    assert response.status_code == 302
    made = Job.objects.exclude(pk=find.pk).get()
    assert made.kind == "get" and made.get_kind_display() == "Retrieve (WADO-RS)"
    response = client.post(f"/jobs/{find.code}/retrieve/", {"method": "move", "level": "STUDY"})
    assert response.status_code == 400  # not a choice on this node


def test_a_row_naming_a_series_brings_that_series_alone(
    storage, alice, project, corpus, web_orthanc
):
    study = max(corpus.studies, key=lambda uid: len(corpus.studies[uid]))
    series = corpus.studies[study][0].series_instance_uid
    wanted = {i.sop_instance_uid for i in corpus.studies[study] if i.series_instance_uid == series}
    node = web_node(alice, f"{web_orthanc.url}/dicom-web")
    rows = [
        {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": study, "SeriesInstanceUID": series}
    ]
    from pulls.services import job_create

    job = job_create(kind="get", owner=alice, project=project, node=node, rows=rows, start=True)
    job = run_inline(job, **QUIET)
    item = job.items.get()
    assert item.status == ItemStatus.DONE, item.error_message
    assert item.instances_expected == len(wanted)
    assert set(_on_disk(storage, project)) == wanted


def test_a_wado_rs_answer_short_of_an_instance_is_incomplete_and_retried(
    storage, alice, project, corpus, faulty
):
    """A well-formed answer that leaves an instance out: the row is not done
    (QIDO-RS counted more), says how many are in the project, and its retry
    brings the rest."""
    study = max(corpus.studies, key=lambda uid: len(corpus.studies[uid]))
    node = web_node(alice, faulty.url)
    faulty.faults = [Fault(drop_last_part=True, path_contains=f"/studies/{study}")]
    job = retrieval_job(alice, project, node, [study], kind="get", start=True)
    from pulls.workers import runner

    runner.run_chunk(list(job.items.values_list("pk", flat=True)))
    item = job.items.get()
    total = len(corpus.studies[study])
    assert item.status == ItemStatus.PENDING
    assert f"{total - 1} of {total} in the project" in item.error_message, item.error_message
    job = run_inline(job, **QUIET)
    assert job.status == JobStatus.DONE
    assert len(_on_disk(storage, project)) == total


def test_a_patient_level_find_by_qido_rs_answers_each_patient_once(
    storage, alice, project, corpus, web_orthanc
):
    """QIDO-RS has no patient resource: studies answer, each patient once."""
    node = web_node(alice, f"{web_orthanc.url}/dicom-web", query_model="P")
    rows = [{"QueryRetrieveLevel": "PATIENT", "PatientID": "CORPUS-*"}]
    job = run_inline(find_job(alice, project, node, rows, start=True), **QUIET)
    patients = sorted(FindResult.objects.filter(job=job).values_list("patient_id", flat=True))
    assert patients == sorted({i.patient_id for i in corpus.instances})
