"""The prototype's command line: `manage.py echo|find` with its CONF.json and QUERY.json."""

import csv
import io
import json

import pytest
from django.core.management import CommandError, call_command

from pulls.models import AuditAction, AuditEvent, Job, JobStatus


def _conf(tmp_path, port: int, ae: str, **extra) -> str:
    conf = {
        "job_title": "cmd line/test",
        "host_ip": "127.0.0.1",
        "host_port": port,
        "client_name": "PACSNPULL",
        "client_ip": "",
        "client_port": 2000,
        "query_model": "S",
        "query_break_count": 10,
        "host_name": ae,
        **extra,
    }
    path = tmp_path / "conf.json"
    path.write_text(json.dumps(conf))
    return str(path)


def _query(tmp_path, rows) -> str:
    path = tmp_path / "find.json"
    path.write_text(json.dumps(rows))
    return str(path)


@pytest.fixture(params=["orthanc", "dcmqrscp"])
def seed_pacs(request):
    pacs = request.getfixturevalue(request.param)
    if request.param == "orthanc":
        return pacs.dicom_port, "ORTHANC"
    return pacs.port, "DCMQRSCP"


@pytest.mark.django_db(transaction=True)
def test_echo_with_the_seed_config(tmp_path, orthanc, capsys, flushable_db):
    call_command("echo", config=_conf(tmp_path, orthanc.dicom_port, "ORTHANC"))
    assert "C-ECHO succeeded" in capsys.readouterr().out
    assert AuditEvent.objects.filter(action=AuditAction.ECHO, success=True).exists()


@pytest.mark.django_db(transaction=True)
def test_find_with_seed_files_writes_every_match(tmp_path, seed_pacs, dicom_data, flushable_db):
    port, ae = seed_pacs
    rows = [
        {"QueryRetrieveLevel": "STUDY", "PatientID": pid, "StudyInstanceUID": "", "StudyDate": ""}
        for pid in sorted(dicom_data.patients)
    ]
    call_command(
        "find",
        config=_conf(tmp_path, port, ae),
        query=_query(tmp_path, rows),
        out=str(tmp_path / "out"),
    )
    results = tmp_path / "out" / "cmd-linetest" / "qry" / "find_results.csv"
    with open(results, newline="", encoding="utf-8") as fh:
        lines = list(csv.DictReader(fh))
    assert {line["StudyInstanceUID"] for line in lines} == set(dicom_data.studies)
    assert {line["row_status"] for line in lines} == {"done"}
    job = Job.objects.get()
    assert (job.status, job.title, job.owner.username) == (JobStatus.DONE, "cmd line/test", "cli")
    assert AuditEvent.objects.filter(action=AuditAction.FIND, job=job).count() == len(rows)


@pytest.mark.django_db(transaction=True)
def test_an_unknown_config_key_is_named(tmp_path, orthanc, flushable_db):
    config = _conf(tmp_path, orthanc.dicom_port, "ORTHANC", host_aet="X")
    with pytest.raises(CommandError, match="unknown key 'host_aet'"):
        call_command("find", config=config, query=_query(tmp_path, [{"PatientID": "1"}]))
    assert Job.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_bad_query_file_sends_nothing(tmp_path, orthanc, flushable_db):
    with pytest.raises(CommandError) as info:
        call_command(
            "find",
            config=_conf(tmp_path, orthanc.dicom_port, "ORTHANC"),
            query=_query(tmp_path, [{"PatientID": "1"}]),
        )
    assert "nothing was sent" in str(info.value)
    assert "row 1, QueryRetrieveLevel: is missing" in str(info.value)
    assert Job.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_failed_rows_give_a_non_zero_exit_with_a_summary(tmp_path, settings, flushable_db):
    from pulls.sandbox.procs import free_port

    settings.PACSNPULL_RETRY_SECONDS = 0
    settings.PACSNPULL_MAX_ATTEMPTS = 2
    with pytest.raises(CommandError) as info:
        call_command(
            "find",
            config=_conf(tmp_path, free_port(), "NOBODY", timeout=2),
            query=_query(tmp_path, [{"QueryRetrieveLevel": "STUDY", "PatientID": "1"}]),
            out=str(tmp_path / "out"),
        )
    message = str(info.value)
    assert "0 of 1 rows done, 1 failed" in message
    assert "row 1: gave up after 2 attempts: could not connect to 127.0.0.1" in message
    assert (tmp_path / "out" / "cmd-linetest" / "qry" / "find_results.csv").exists()


@pytest.fixture
def cli_storage(settings, staging):
    settings.PACSNPULL_STAGING_DIR = staging
    settings.PACSNPULL_ARRIVAL_WAIT_SECONDS = 1
    settings.PACSNPULL_RETRY_SECONDS = 0


def _files_under(folder):
    return {p.stem: p for p in folder.rglob("*.dcm")}


@pytest.mark.django_db(transaction=True)
def test_move_with_seed_files_finds_then_retrieves_into_the_layout(
    tmp_path, orthanc, dicom_data, cli_storage, flushable_db, capsys
):
    from tests.conftest import SCP_PORT

    patient = sorted(dicom_data.patients)[0]
    call_command(
        "move",
        config=_conf(tmp_path, orthanc.dicom_port, "ORTHANC", client_port=SCP_PORT),
        query=_query(tmp_path, [{"QueryRetrieveLevel": "STUDY", "PatientID": patient}]),
        out=str(tmp_path / "out"),
    )
    base = tmp_path / "out" / "cmd-linetest"
    files = _files_under(base / "dcm")
    assert set(files) == {i.sop_instance_uid for i in dicom_data.patients[patient]}
    for inst in dicom_data.patients[patient]:
        expected = base / "dcm" / patient / inst.study_instance_uid / inst.series_instance_uid
        assert files[inst.sop_instance_uid] == expected / f"{inst.sop_instance_uid}.dcm"
    assert (base / "qry" / "find_results.csv").exists()
    with open(base / "qry" / "move_results.csv", encoding="utf-8") as fh:
        results = list(csv.DictReader(fh))
    assert {r["status"] for r in results} == {"done"}
    printed = capsys.readouterr()
    assert "instances in" in printed.out
    # The progress bar, rewritten in place: the find's rows, then the retrieval's.
    rows = len({i.study_instance_uid for i in dicom_data.patients[patient]})
    assert f"\r[{'#' * 30}] 1/1 rows, 0 failed" in printed.err
    assert f"\r[{'#' * 30}] {rows}/{rows} rows, 0 failed" in printed.err


@pytest.mark.django_db(transaction=True)
def test_move_get_with_study_uids_on_dcmqrscp(
    tmp_path, dcmqrscp, dicom_data, cli_storage, flushable_db
):
    study, instances = sorted(dicom_data.studies.items())[2]
    call_command(
        "move",
        config=_conf(tmp_path, dcmqrscp.port, "DCMQRSCP"),
        query=_query(tmp_path, [{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study}]),
        out=str(tmp_path / "out"),
        method="get",
    )
    files = _files_under(tmp_path / "out" / "cmd-linetest" / "dcm")
    assert set(files) == {i.sop_instance_uid for i in instances}


@pytest.mark.django_db(transaction=True)
def test_move_in_the_patient_root_model_finds_the_patient_of_a_study_first(
    tmp_path, dcmqrscp, dicom_data, cli_storage, flushable_db, capsys
):
    """With query_model "P" a retrieval names the patient too: rows that give
    only the StudyInstanceUID are found first (as the prototype did), and the
    retrieval then names both."""
    study, instances = sorted(dicom_data.studies.items())[3]
    call_command(
        "move",
        config=_conf(tmp_path, dcmqrscp.port, "DCMQRSCP", query_model="P"),
        query=_query(tmp_path, [{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study}]),
        out=str(tmp_path / "out"),
        method="get",
    )
    assert "finding the studies first" in capsys.readouterr().err
    files = _files_under(tmp_path / "out" / "cmd-linetest" / "dcm")
    assert set(files) == {i.sop_instance_uid for i in instances}


@pytest.mark.django_db(transaction=True)
def test_move_refuses_a_client_port_taken_by_something_that_is_not_a_storage_scp(
    tmp_path, orthanc, dicom_data, cli_storage, flushable_db
):
    """client_port is taken, but not by a DICOM storage SCP answering as
    client_name: the C-MOVE's files would go nowhere, so nothing is sent."""
    import socket

    study = sorted(dicom_data.studies)[0]
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        port = squatter.getsockname()[1]
        with pytest.raises(CommandError) as info:
            call_command(
                "move",
                config=_conf(tmp_path, orthanc.dicom_port, "ORTHANC", client_port=port),
                query=_query(
                    tmp_path, [{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study}]
                ),
                out=str(tmp_path / "out"),
            )
    message = str(info.value)
    assert f"port {port} is in use, but not by a storage SCP that answers as PACSNPULL" in message
    assert "set client_port to a free port" in message
    assert not Job.objects.exists()
    assert not list((tmp_path / "out").rglob("*.dcm"))


@pytest.mark.django_db(transaction=True)
def test_move_runs_its_own_storage_scp_and_reports_what_is_missing(
    tmp_path, dicom_data, settings, flushable_db
):
    from pulls.sandbox.procs import free_port
    from tests.pulls.scripted_pacs import ScriptedPacs

    settings.PACSNPULL_STAGING_DIR = tmp_path / "staging"
    settings.PACSNPULL_ARRIVAL_WAIT_SECONDS = 1
    settings.PACSNPULL_RETRY_SECONDS = 0
    settings.PACSNPULL_MAX_ATTEMPTS = 1
    port = free_port()
    study, instances = sorted(dicom_data.studies.items())[6]
    files = [dicom_data.root / i.path for i in instances]
    with (
        ScriptedPacs(
            files, behaviour="withhold", destinations={"CLISCP": ("127.0.0.1", port)}
        ) as pacs,
        pytest.raises(CommandError) as info,
    ):
        call_command(
            "move",
            config=_conf(
                tmp_path, pacs.port, pacs.ae_title, client_name="CLISCP", client_port=port
            ),
            query=_query(tmp_path, [{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study}]),
            out=str(tmp_path / "out"),
        )
    n = len(instances)
    assert f"0 of 1 items complete, 1 failed; {n - 2} of {n} instances" in str(info.value)
    assert len(_files_under(tmp_path / "out" / "cmd-linetest" / "dcm")) == n - 2


@pytest.mark.django_db(transaction=True)
def test_move_pseudonymise_writes_pseudonymised_files_and_a_private_mapping(
    tmp_path, orthanc, dicom_data, cli_storage, flushable_db
):
    """`move --pseudonymise`: the files carry the patient's pseudonym (folder and
    PatientID) and no original UID; the mapping is qry/mapping.csv, readable by
    its owner alone; the same title without the flag may not write identifiable
    files into the same folder."""
    import os
    import stat

    from pydicom import dcmread

    patient = sorted(dicom_data.patients)[1]
    instances = dicom_data.patients[patient]
    studies = sorted({i.study_instance_uid for i in instances})
    rows = [{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": uid} for uid in studies]
    conf = _conf(tmp_path, orthanc.dicom_port, "ORTHANC")
    call_command("move", config=conf, query=_query(tmp_path, rows), out=str(tmp_path / "out"),
                 method="get", pseudonymise=True)  # fmt: skip
    base = tmp_path / "out" / "cmd-linetest"
    files = sorted((base / "dcm").rglob("*.dcm"))
    assert len(files) == len(instances)
    mapping = base / "qry" / "mapping.csv"
    assert stat.S_IMODE(os.stat(mapping).st_mode) == 0o600
    with open(mapping, encoding="utf-8") as fh:
        mapped = list(csv.DictReader(fh))
    assert {row["PatientID"] for row in mapped} == {patient}
    assert {row["StudyInstanceUID"] for row in mapped} == set(studies)
    pseudonym = mapped[0]["Pseudonym"]
    originals = {i.sop_instance_uid for i in instances} | set(studies)
    for path in files:
        ds = dcmread(path, stop_before_pixels=True)
        assert ds.PatientID == pseudonym == path.relative_to(base / "dcm").parts[0]
        assert ds.SOPInstanceUID not in originals and ds.StudyInstanceUID not in originals
        assert ds.StudyInstanceUID in {row["pseudonymised StudyInstanceUID"] for row in mapped}
    with pytest.raises(CommandError, match="holds the files of an earlier pseudonymised run"):
        call_command("move", config=conf, query=_query(tmp_path, rows),
                     out=str(tmp_path / "out"), method="get")  # fmt: skip


def test_move_nifti_converts_each_series_beside_the_dicom_files(
    tmp_path, orthanc, dicom_data, cli_storage, flushable_db
):
    """`move --nifti`: every retrieved series as NIfTI (opened with nibabel, one
    slice per instance) in dcm/nifti/, and the list of series in qry/nifti.csv."""
    import nibabel

    study = sorted(dicom_data.studies)[0]
    instances = dicom_data.studies[study]
    rows = [{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study}]
    conf = _conf(tmp_path, orthanc.dicom_port, "ORTHANC")
    out = io.StringIO()
    call_command("move", config=conf, query=_query(tmp_path, rows), out=str(tmp_path / "out"),
                 method="get", nifti=True, stdout=out)  # fmt: skip
    base = tmp_path / "out" / "cmd-linetest"
    series = {i.series_instance_uid: i for i in instances}
    assert f"{len(series)} series in NIfTI" in out.getvalue()
    with open(base / "qry" / "nifti.csv", encoding="utf-8") as fh:
        listed = list(csv.DictReader(fh))
    assert {row["reason"] for row in listed} == {""}
    for uid, inst in series.items():
        image = nibabel.load(
            base / "dcm" / "nifti" / inst.patient_id / study / uid / "series.nii.gz"
        )
        assert image.shape[2] == len(dicom_data.series[uid])


def test_move_send_to_sends_each_study_and_fails_when_one_does_not_arrive(
    tmp_path, orthanc, destination_orthanc, dicom_data, cli_storage, flushable_db
):
    """`move --send-to`: each retrieved study sent on, counted at the destination;
    a destination that is not there fails the command, naming the study."""
    from tests.conftest import clear_orthanc

    clear_orthanc(destination_orthanc)
    study = sorted(dicom_data.studies)[0]
    rows = [{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study}]
    conf = _conf(tmp_path, orthanc.dicom_port, "ORTHANC")
    with pytest.raises(CommandError, match="write it as AET@HOST:PORT"):
        call_command("move", config=conf, query=_query(tmp_path, rows), out=str(tmp_path / "out"),
                     method="get", send_to="RESEARCH-127.0.0.1")  # fmt: skip
    out = io.StringIO()
    call_command("move", config=conf, query=_query(tmp_path, rows), out=str(tmp_path / "out"),
                 method="get", send_to=f"RESEARCH@127.0.0.1:{destination_orthanc.dicom_port}",
                 stdout=out)  # fmt: skip
    assert "1 of 1 studies sent to RESEARCH@127.0.0.1" in out.getvalue()
    assert destination_orthanc.instance_count() == len(dicom_data.studies[study])
    with pytest.raises(CommandError, match=f"study {study}"):
        call_command("move", config=conf, query=_query(tmp_path, rows), out=str(tmp_path / "out2"),
                     method="get", send_to="NOBODY@127.0.0.1:9")  # fmt: skip
