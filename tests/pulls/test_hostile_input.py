"""Query input that nothing can break: 150-odd hostile files (tests/pulls/hostile_files.py)
through the parser, the upload form and the command line — a named error or a valid
file, never a 500, a traceback or half-saved rows — within bounded memory."""

import json
import os
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from pulls.models import Job
from pulls.queries.files import parse_query_file
from pulls.sandbox.procs import free_port
from tests.conftest import REPO
from tests.pulls.hostile_files import hostile_files, write_corpus

MAX_BYTES = 20 << 20


@pytest.fixture(scope="module")
def corpus():
    return hostile_files()


def _by_name(corpus, name):
    return next(data for file_name, data in corpus if file_name == name)


def test_the_corpus_is_large_and_varied(corpus):
    assert len(corpus) >= 150
    assert {name.rsplit(".", 1)[-1] for name, _ in corpus} >= {"json", "csv", "xlsx"}


def test_every_hostile_file_gives_rows_or_named_problems(corpus):
    for name, data in corpus:
        parsed = parse_query_file(data, name=name, max_bytes=MAX_BYTES, max_rows=100_000)
        assert parsed.ok or parsed.problems, name
        if parsed.ok:
            assert parsed.rows, name
        for problem in parsed.problems:
            assert str(problem).strip(), name
        if not parsed.ok:
            assert parsed.rows == [], name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("bomb-1-GiB.xlsx", "unpacks to 1024 MB"),
        ("bomb-lying-size.xlsx", "cannot read this XLSX file"),
        ("shared-strings-70-MiB.xlsx", "text takes 74 MB unpacked; at most 64 MB"),
        ("many-members.xlsx", "parts: it is no spreadsheet"),
        ("deep-50000.json", "nests deeper than 3 levels"),
        ("number-5000-digits.json", "a number of 5000 characters"),
        ("nan.json", "NaN is not a value a query can hold"),
        ("duplicate-key.json", "row 1, PatientID: appears twice in this object: keep one"),
        ("object-value.json", "row 1, PatientName: is an object"),
        ("list-value-name.json", "row 1, PatientName: is a list"),
        ("value-5-MiB.json", "row 1, PatientName: is 5242880 characters long"),
        ("cell-5-MiB.csv", "cannot be read"),
        ("duplicate-header.csv", "the header names PatientID twice (columns 2 and 3)"),
        ("duplicate-header-case.csv", "the header names PatientID twice"),
        ("nul-bytes.csv", "NUL characters"),
        ("300-columns.csv", "the header has 300 columns; at most 256"),
        ("duplicate-header.xlsx", "the header names PatientID twice"),
        ("cell-70k.xlsx", "row 1, PatientID: is longer than 65536 characters"),
        ("300-columns.xlsx", "the header has 257 columns; at most 256"),
        ("laughs.xlsx", "cannot read this XLSX file"),
        ("external-entity.xlsx", "cannot read this XLSX file"),
    ],
)
def test_each_kind_of_hostile_input_is_named(corpus, name, expected):
    parsed = parse_query_file(_by_name(corpus, name), name=name, max_bytes=MAX_BYTES)
    assert not parsed.ok
    assert any(expected in str(p) for p in parsed.problems), [str(p) for p in parsed.problems]


def test_a_list_of_uids_is_one_value_joined_as_dicom_lists_them(corpus):
    parsed = parse_query_file(_by_name(corpus, "uid-list-ok.json"), name="uid-list-ok.json")
    assert parsed.ok
    assert parsed.rows[0]["StudyInstanceUID"] == "1.2.3\\1.2.4"


def test_parsing_every_hostile_file_stays_within_300_mb(tmp_path):
    """In a process of its own, as a web worker: its peak memory over the corpus."""
    folder = tmp_path / "hostile"
    write_corpus(folder)
    # VmHWM, not ru_maxrss: the latter keeps the forked test process's size.
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from pulls.queries.files import parse_query_file\n"
        "for path in sorted(Path(sys.argv[1]).iterdir()):\n"
        "    parse_query_file(path.read_bytes(), name=path.name, max_bytes=20 << 20)\n"
        "status = Path('/proc/self/status').read_text().split('VmHWM:')[1]\n"
        "print(status.split()[0])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(folder)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    peak_mb = int(result.stdout.split()[-1]) / 1024
    assert peak_mb < 300


@pytest.mark.django_db
def test_the_upload_form_answers_every_hostile_file_without_a_500(
    client, alice, project, orthanc_node, corpus
):
    client.force_login(alice)
    jobs = Job.objects.count()
    for name, data in corpus:
        from django.core.files.uploadedfile import SimpleUploadedFile

        upload = SimpleUploadedFile(name.replace("/", "_").replace("\n", "_"), data)
        response = client.post(
            "/jobs/new/",
            {
                "kind": "find",
                "project": project.pk,
                "node": orthanc_node.pk,
                "default_level": "",
                "title": "hostile",
                "query_file": upload,
            },
        )
        assert response.status_code in (200, 302), (name, response.status_code)
        if response.status_code == 200:  # the form again, saying what is wrong
            assert response.context["form"].errors, name
    parsed_ok = sum(1 for name, data in corpus if parse_query_file(data, name=name).ok)
    assert Job.objects.count() == jobs + parsed_ok


@pytest.mark.django_db(transaction=True)
def test_the_command_line_answers_every_hostile_file_with_one_message(
    tmp_path, corpus, settings, flushable_db
):
    """A named error (CommandError: one line or a list, no traceback) for each
    bad file; a valid one runs, and fails its rows on a PACS that is not there."""
    settings.PACSNPULL_MAX_ATTEMPTS = 1
    conf = tmp_path / "conf.json"
    conf.write_text(
        json.dumps(
            {
                "job_title": "hostile", "host_ip": "127.0.0.1", "host_port": free_port(),
                "client_name": "PACSNPULL", "client_ip": "", "client_port": free_port(),
                "query_model": "S", "query_break_count": 10, "timeout": 1,
                "queries_per_minute": 0,
            }
        )
    )  # fmt: skip
    folder = tmp_path / "hostile"
    for path in write_corpus(folder):
        try:
            call_command("find", config=str(conf), query=str(path), out=str(tmp_path / "out"))
        except CommandError as exc:
            assert str(exc).strip(), path.name
        assert os.path.exists(path)
