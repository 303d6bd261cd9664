"""A real archive's data in, as the archive holds it: thirteen transfer syntaxes,
multi-frame, non-image objects, a private and a retired SOP class, and names in
many character sets (pulls.sandbox.corpus), from Orthanc and from dcmqrscp."""

import csv
import io
import json
import zlib

import pytest
from django.conf import settings
from pydicom import dcmread

from pulls.cli.inline import run_inline
from pulls.models import ItemStatus, JobStatus, RetrievedInstance
from pulls.retrieval.manifests import manifest_chunks
from pulls.sandbox.dcmqrscp import Dcmqrscp
from tests.conftest import SCP_PORT, make_node, retrieval_job
from tests.pulls.retrieval_support import QUIET
from tests.pulls.test_engine import dataset_bytes

DEFLATED = "1.2.840.10008.1.2.1.99"
UNCOMPRESSED = {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2", DEFLATED}


@pytest.fixture(scope="session")
def corpus_dcmqrscp(sandbox, corpus):
    pacs = Dcmqrscp(
        sandbox / "corpus-dcmqrscp",
        aet="DCMQRSCP",
        hosts={"portal": (settings.PACSNPULL_AE_TITLE, "127.0.0.1", SCP_PORT)},
        storage_classes=sorted(corpus.sop_classes),
    )
    pacs.load(corpus.files())
    pacs.start()
    try:
        yield pacs
    finally:
        pacs.stop()


def _node(request, which: str, alice):
    if which == "orthanc":
        pacs = request.getfixturevalue("corpus_orthanc")
        node = make_node("CORPUS-ORTHANC", pacs.dicom_port, "ORTHANC", connect_timeout=5)
    else:
        pacs = request.getfixturevalue("corpus_dcmqrscp")
        node = make_node("CORPUS-DCMQRSCP", pacs.port, "DCMQRSCP", connect_timeout=5)
    node.granted_users.add(alice)
    return node


def _data_set(data: bytes, transfer_syntax: str) -> bytes:
    """A file's data set as the PACS holds it (a deflated one inflated: a PACS
    deflates again as it sends, with its own compressor)."""
    if transfer_syntax == DEFLATED:
        return zlib.decompress(data, -zlib.MAX_WBITS)
    return data


def _on_disk(storage, project) -> dict:
    """SOP Instance UID -> (path, transfer syntax in the file meta)."""
    found = {}
    for path in (storage / project.slug).rglob("*.dcm"):
        ds = dcmread(path, stop_before_pixels=True)
        found[ds.SOPInstanceUID] = (path, str(ds.file_meta.TransferSyntaxUID))
    return found


def _same_content(got, source) -> bool:
    """The same elements, and the same pixels however the bytes are ordered."""
    if "PixelData" in source:
        if not (got.pixel_array == source.pixel_array).all():
            return False
        del got.PixelData, source.PixelData
    return got == source


def _manifest(job) -> dict:
    rows = list(csv.DictReader(io.StringIO("".join(manifest_chunks(job)))))
    return {row["SOPInstanceUID"]: row for row in rows}


def test_the_corpus_is_what_a_real_archive_holds(corpus):
    """What the tests below receive: if the generator lost a kind of object,
    they would prove less without failing."""
    assert len(corpus.transfer_syntaxes) >= 12
    assert any(inst.frames > 1 for inst in corpus.instances)
    labels = {inst.label for inst in corpus.instances}
    assert {"sr", "rtstruct", "pr", "encapsulated-pdf", "private-class"} <= labels
    assert len({inst.character_set for inst in corpus.instances}) >= 8
    assert max(inst.size for inst in corpus.instances) > 8 << 20  # spills to disk


@pytest.mark.services
@pytest.mark.parametrize("method", ["move", "get"])
def test_every_instance_of_a_real_archive_arrives_as_orthanc_holds_it(
    method, request, storage, alice, project, corpus
):
    """From Orthanc by C-MOVE and by C-GET: every instance, byte for byte as the
    archive holds it (compressed ones not converted, lossy ones not
    decompressed), its own transfer syntax in the file meta, and its SOP
    Instance UID, class and syntax in the manifest."""
    node = _node(request, "orthanc", alice)
    job = run_inline(retrieval_job(alice, project, node, corpus.studies, kind=method), **QUIET)
    errors = list(job.items.exclude(status=ItemStatus.DONE).values_list("error_message", flat=True))
    assert job.status == JobStatus.DONE, errors
    on_disk = _on_disk(storage, project)
    assert set(on_disk) == set(corpus.by_sop())
    manifest = _manifest(job)
    for inst in corpus.instances:
        path, syntax = on_disk[inst.sop_instance_uid]
        assert syntax == inst.transfer_syntax, inst.label
        source = dataset_bytes(corpus.root / inst.path)
        assert _data_set(dataset_bytes(path), syntax) == _data_set(source, syntax), inst.label
        row = manifest[inst.sop_instance_uid]
        assert (row["SOPClassUID"], row["TransferSyntaxUID"]) == (
            inst.sop_class_uid,
            inst.transfer_syntax,
        )
    assert RetrievedInstance.objects.filter(project=project).count() == len(corpus.instances)


@pytest.mark.services
def test_a_c_get_from_dcmqrscp_brings_every_instance_without_converting_compressed_ones(
    request, storage, alice, project, corpus
):
    """dcmqrscp names no SOP classes (no SOPClassesInStudy, no SOPClassUID at
    IMAGE level), sends every instance of a class in the first context it
    accepted for it, and fails the instances it cannot convert: the C-GET is
    done again one compressed syntax at a time. Compressed instances arrive as
    stored; the uncompressed ones as dcmqrscp converts them (implicit or big
    endian to explicit VR little endian: the same elements, the same pixel
    data). Only the private class cannot come by C-GET from a PACS that does
    not name it, and its row says so."""
    node = _node(request, "dcmqrscp", alice)
    job = run_inline(retrieval_job(alice, project, node, corpus.studies, kind="get"), **QUIET)
    private = next(i for i in corpus.instances if i.label == "private-class")
    on_disk = _on_disk(storage, project)
    assert set(on_disk) == set(corpus.by_sop()) - {private.sop_instance_uid}
    for inst in corpus.instances:
        if inst is private:
            continue
        path, syntax = on_disk[inst.sop_instance_uid]
        if inst.transfer_syntax in UNCOMPRESSED:
            assert syntax in UNCOMPRESSED, inst.label
            assert _same_content(dcmread(path), dcmread(corpus.root / inst.path)), inst.label
        else:
            assert syntax == inst.transfer_syntax, inst.label
            source = dataset_bytes(corpus.root / inst.path)
            assert dataset_bytes(path) == source, inst.label
    for item in job.items.all():
        if item.identifier["StudyInstanceUID"] == private.study_instance_uid:
            assert item.status == ItemStatus.FAILED
            assert "does not say which SOP classes" in item.error_message, item.error_message
            assert "C-MOVE can" in item.error_message
        else:
            assert item.status == ItemStatus.DONE, item.error_message


@pytest.mark.services
def test_a_c_move_from_dcmqrscp_says_which_instances_it_could_not_send(
    request, storage, alice, project, corpus
):
    """dcmqrscp's C-MOVE proposes uncompressed syntaxes only and cannot
    decompress: its compressed instances cannot reach any receiver. Everything
    else arrives (the private class too); the rows of studies with compressed
    instances fail, saying the PACS failed C-STORE sub-operations and why such
    a failure happens, not something about move destinations."""
    node = _node(request, "dcmqrscp", alice)
    job = run_inline(retrieval_job(alice, project, node, corpus.studies, kind="move"), **QUIET)
    on_disk = _on_disk(storage, project)
    compressed = {
        i.sop_instance_uid for i in corpus.instances if i.transfer_syntax not in UNCOMPRESSED
    }
    assert set(on_disk) == set(corpus.by_sop()) - compressed
    with_compressed = {
        i.study_instance_uid for i in corpus.instances if i.sop_instance_uid in compressed
    }
    for item in job.items.all():
        study = item.identifier["StudyInstanceUID"]
        if study in with_compressed:
            assert item.status == ItemStatus.FAILED
            assert "C-STORE sub-operation" in item.error_message, item.error_message
            assert "transfer syntax" in item.error_message
            assert "move destination" not in item.error_message
        else:
            assert item.status == ItemStatus.DONE, item.error_message


def _answers(port: int, ae_title: str, rows: list[dict]) -> dict[str, tuple[str, str]]:
    """PatientID -> (PatientName, StudyDescription) as pydicom decodes the PACS's
    own answers to the same C-FINDs, asked by pynetdicom (not by the portal)."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

    ae = AE(ae_title=settings.PACSNPULL_AE_TITLE)
    ae.add_requested_context(FIND)
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    assert assoc.is_established
    found = {}
    try:
        for row in rows:
            query = Dataset()
            for key, value in row.items():
                setattr(query, key, value)
            for status, match in assoc.send_c_find(query, FIND):
                if status.Status in (0xFF00, 0xFF01):
                    found[str(match.PatientID)] = (
                        str(match.PatientName),
                        str(match.StudyDescription),
                    )
    finally:
        assoc.release()
    return found


@pytest.mark.services
@pytest.mark.parametrize("which", ["orthanc", "dcmqrscp"])
def test_find_results_and_exports_show_names_as_the_pacs_answer_says(
    which, request, client, alice, project, corpus
):
    """Names and descriptions in thirteen character sets: the match table, the
    CSV and the XLSX hold them as pydicom decodes the PACS's answer (whatever
    SpecificCharacterSet it names), in UTF-8. This Orthanc answers in UTF-8, so
    there they are the names as written; dcmqrscp answers in each file's set."""
    from openpyxl import load_workbook

    from pulls.models import FindResult, JobKind
    from pulls.services import job_create

    node = _node(request, which, alice)
    people = [i for i in corpus.instances if i.label.startswith("charset ")]
    rows = [
        {"QueryRetrieveLevel": "STUDY", "PatientID": p.patient_id, "PatientName": "",
         "StudyDescription": ""}
        for p in people
    ]  # fmt: skip
    job = run_inline(
        job_create(kind=JobKind.FIND, owner=alice, project=project, node=node, rows=rows), **QUIET
    )
    assert job.status == JobStatus.DONE
    port = node.port
    expected = _answers(port, node.ae_title, rows)
    assert len(expected) == len(people)
    stored = {
        r.patient_id: (r.attributes["PatientName"], r.attributes["StudyDescription"])
        for r in FindResult.objects.filter(job=job)
    }
    assert stored == expected
    if which == "orthanc":
        # Orthanc 1.10 reads every set but one right: JIS X 0201 katakana with JIS X
        # 0208 (ISO 2022 IR 13 and IR 87) comes out of it with the escapes lost.
        by_id = {p.patient_id: p.patient_name for p in people}
        mangled = {p.patient_id for p in people if p.character_set.startswith("ISO 2022 IR 13")}
        assert {pid: name for pid, (name, _) in stored.items() if pid not in mangled} == {
            pid: name for pid, name in by_id.items() if pid not in mangled
        }
    client.force_login(alice)
    text = b"".join(client.get(f"/jobs/{job.code}/matches.csv").streaming_content).decode("utf-8")
    exported = {r["PatientID"]: r["PatientName"] for r in csv.DictReader(io.StringIO(text))}
    assert exported == {pid: name for pid, (name, _) in expected.items()}
    sheet = load_workbook(io.BytesIO(client.get(f"/jobs/{job.code}/matches.xlsx").content)).active
    header = [cell.value for cell in sheet[1]]
    names = {
        row[header.index("PatientID")]: row[header.index("PatientName")]
        for row in sheet.iter_rows(min_row=2, values_only=True)
    }
    assert names == exported


@pytest.mark.services
def test_a_query_value_beyond_ascii_is_sent_in_the_nodes_character_set(
    request, alice, project, corpus
):
    """PatientName with accents or in another script is sent with SpecificCharacterSet
    ISO_IR 192 (the node's default) and matches; a node set to Latin-1 refuses a
    Cyrillic value at upload, naming the row, the key and the fix."""
    from pulls.models import FindResult, JobKind
    from pulls.queries.files import parse_query_file
    from pulls.services import job_create

    node = _node(request, "orthanc", alice)
    rows = [
        {"QueryRetrieveLevel": "STUDY", "PatientName": "Müller*", "PatientID": ""},
        {"QueryRetrieveLevel": "STUDY", "PatientName": "Иванов*", "PatientID": ""},
    ]
    job = run_inline(
        job_create(kind=JobKind.FIND, owner=alice, project=project, node=node, rows=rows), **QUIET
    )
    found = {r.item.row: r.attributes["PatientName"] for r in FindResult.objects.filter(job=job)}
    assert found == {1: "Müller^Jürgen", 2: "Иванов^Пётр"}

    node.character_set = "ISO_IR 100"
    data = json.dumps(rows).encode()
    parsed = parse_query_file(data, name="q.json", character_set=node.character_set)
    assert not parsed.ok
    (problem,) = parsed.problems
    assert (problem.row, problem.key) == (2, "PatientName")
    assert "'Иванов'" in problem.message and "ISO_IR 192" in problem.message
