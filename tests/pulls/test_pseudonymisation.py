"""Pseudonymised projects (pulls.deid): what enters their folder names nobody,
the same patient keeps the same pseudonym, UIDs and date shift from job to job,
references between objects still resolve, and the pixels are untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from pulls.cli.inline import run_inline
from pulls.deid.keys import Keys
from pulls.models import (
    AuditAction,
    AuditEvent,
    ItemStatus,
    JobStatus,
    Project,
    PseudonymPatient,
    PseudonymStudy,
    RetrievedInstance,
)
from tests.conftest import make_node, retrieval_job
from tests.pulls.leaks import collect, leaks
from tests.pulls.retrieval_support import QUIET

pytestmark = pytest.mark.services

# The corpus's objects a pseudonymised project does not take by default: they
# may show burned-in text (two secondary captures without BurnedInAnnotation,
# a PDF that says YES).
BURNED_IN = {"jpeg-baseline", "multiframe-sc-j2k", "encapsulated-pdf"}


@pytest.fixture
def corpus_node(corpus_orthanc, owner):
    node = make_node("CORPUS-ORTHANC", corpus_orthanc.dicom_port, "ORTHANC", connect_timeout=5)
    node.granted_users.add(owner)
    return node


def _outputs(storage: Path, project: Project) -> list[Path]:
    return sorted(p for p in (storage / project.slug).rglob("*.dcm"))


def _by_patient(project: Project, storage: Path) -> tuple[dict, dict]:
    """Shift and output files of each original patient (from the mapping)."""
    pseudonyms = {p.pseudonym: p for p in PseudonymPatient.objects.filter(project=project)}
    shifts, outputs = {}, {}
    for record in RetrievedInstance.objects.filter(project=project):
        patient = pseudonyms[record.patient_id]
        shifts[patient.patient_id.encode()] = patient.date_shift_days
        outputs.setdefault(patient.patient_id.encode(), set()).add(
            storage / project.slug / record.path
        )
    return shifts, outputs


def _retrieve(owner, project, node, studies, method):
    job = run_inline(retrieval_job(owner, project, node, studies, kind=method), **QUIET)
    errors = list(job.items.exclude(status=ItemStatus.DONE).values_list("error_message", flat=True))
    assert job.status == JobStatus.DONE, errors
    return job


@pytest.mark.parametrize("method", ["move", "get"])
def test_nothing_identifying_of_a_real_archive_enters_a_pseudonymised_project(
    method, storage, owner, pseudonymised, corpus_node, corpus
):
    """Every instance of the corpus (13 syntaxes, multi-frame, SR, RT, PR, KO,
    private tags, 13 character sets) by C-MOVE and by C-GET: no name, ID,
    birth date, accession number, institution, physician, address, original
    UID or original date anywhere in the files' bytes or paths; pixel data
    byte for byte as the archive holds it; the de-identification attributes
    in every file; instances that may show burned-in text set aside."""
    job = _retrieve(owner, pseudonymised, corpus_node, corpus.studies, method)
    outputs = _outputs(storage, pseudonymised)
    taken = [i for i in corpus.instances if i.label not in BURNED_IN]
    assert len(outputs) == len(taken)

    shifts, by_patient = _by_patient(pseudonymised, storage)
    found = leaks(
        collect(corpus.files()), storage / pseudonymised.slug, shifts=shifts, outputs_of=by_patient
    )
    assert found == []

    sources = {i.sop_instance_uid: dcmread(corpus.root / i.path) for i in corpus.instances}
    by_shape = {}
    for source in sources.values():
        if "PixelData" in source:
            by_shape[source.PixelData] = source
    for path in outputs:
        ds = dcmread(path)
        assert ds.PatientIdentityRemoved == "YES"
        codes = [item.CodeValue for item in ds.DeidentificationMethodCodeSequence]
        assert codes == ["113100", "113107", "113105"]  # basic, modified dates, clean descriptors
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.SOPInstanceUID.startswith("2.25.")
        assert (
            ds.PatientID
            == ds.PatientName
            == path.relative_to(storage / pseudonymised.slug).parts[0]
        )
        if "PixelData" in ds:
            assert ds.PixelData in by_shape  # the very bytes the archive holds

    quarantined = AuditEvent.objects.filter(action=AuditAction.QUARANTINE, job=job)
    assert quarantined.exists()
    assert all("burned-in text" in event.message for event in quarantined)


@pytest.fixture
def synthetic_node(orthanc, owner):
    node = make_node("ORTHANC", orthanc.dicom_port, orthanc.aet, connect_timeout=5)
    node.granted_users.add(owner)
    return node


def _study_dates(storage: Path, project: Project) -> dict[str, set[str]]:
    """Pseudonym -> the study dates of its files."""
    found: dict[str, set[str]] = {}
    for path in _outputs(storage, project):
        ds = dcmread(path, stop_before_pixels=True)
        found.setdefault(ds.PatientID, set()).add(ds.StudyDate)
    return found


def test_a_patient_keeps_pseudonym_uids_and_shift_from_job_to_job(
    storage, owner, pseudonymised, synthetic_node, dicom_data
):
    """A patient's first study by C-MOVE in one job, the second by C-GET in a
    later one: the same pseudonym (one folder), one date shift (the interval
    between the studies kept), one row in the mapping per patient and study.
    The first study asked again is found complete in the project (its UIDs
    are recomputed, not looked up): nothing is transferred twice."""
    from datetime import date

    patient = dicom_data.instances[0].patient_id
    studies = sorted(
        {i.study_instance_uid for i in dicom_data.instances if i.patient_id == patient}
    )
    originals = {i.study_instance_uid: i.study_date for i in dicom_data.instances}
    _retrieve(owner, pseudonymised, synthetic_node, studies[:1], "move")
    _retrieve(owner, pseudonymised, synthetic_node, studies[1:], "get")

    mapped = PseudonymPatient.objects.get(project=pseudonymised)
    assert mapped.patient_id == patient
    assert [
        p.name for p in (storage / pseudonymised.slug).iterdir() if not p.name.startswith(".")
    ] == [mapped.pseudonym]
    assert set(
        PseudonymStudy.objects.filter(project=pseudonymised).values_list(
            "study_instance_uid", flat=True
        )
    ) == set(studies)
    dates = sorted(_study_dates(storage, pseudonymised)[mapped.pseudonym])
    before = sorted(originals[uid] for uid in studies)

    def day(text):
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))

    assert (day(dates[1]) - day(dates[0])) == (day(before[1]) - day(before[0]))
    assert (day(before[0]) - day(dates[0])).days == mapped.date_shift_days

    again = _retrieve(owner, pseudonymised, synthetic_node, studies[:1], "get")
    item = again.items.get()
    assert item.instances_received == item.instances_expected > 0
    assert item.bytes_received == 0  # found complete: nothing came again


def test_references_between_objects_resolve_in_a_pseudonymised_project(
    storage, owner, pseudonymised, corpus_node, corpus
):
    """The RT structure set, plan and dose, the SR, the presentation state and
    the key object selection refer to images and to each other by UID: every
    reference in the project's files names a UID that is there."""
    _retrieve(owner, pseudonymised, corpus_node, corpus.studies, "get")
    present, references = set(), []
    for path in _outputs(storage, pseudonymised):
        ds = dcmread(path, stop_before_pixels=True)
        present.update(
            {ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID,
             str(ds.get("FrameOfReferenceUID", ""))}
        )  # fmt: skip

        def visit(dataset, elem, path=path):
            if elem.keyword in ("ReferencedSOPInstanceUID", "ReferencedFrameOfReferenceUID",
                                "SeriesInstanceUID", "FrameOfReferenceUID"):  # fmt: skip
                references.append((path.name, elem.keyword, str(elem.value)))

        for item in ds:
            if item.VR == "SQ":
                for inner in item.value:
                    inner.walk(visit)
    assert len(references) >= 15  # the corpus's objects refer to one another
    dangling = [ref for ref in references if ref[2] not in present]
    assert dangling == []


def test_the_command_line_pseudonymises_a_folder_with_the_projects_key(
    tmp_path, owner, pseudonymised, corpus
):
    """`manage.py deidentify`: the corpus from a folder, with the project's key
    and mapping (the same pseudonyms as a retrieval would give), nothing
    identifying in the output, files that may show burned-in text left out."""
    from django.core.management import call_command

    out = tmp_path / "out"
    call_command("deidentify", "--project", pseudonymised.slug, str(corpus.root), str(out))
    outputs = sorted(out.rglob("*.dcm"))
    assert len(outputs) == len([i for i in corpus.instances if i.label not in BURNED_IN])
    found = leaks(
        collect(corpus.files()), out, shifts=_shifts(pseudonymised),
        outputs_of=_outputs_of(pseudonymised, out),
    )  # fmt: skip
    assert found == []
    keys = Keys(bytes.fromhex(pseudonymised.pseudonym_secret))
    assert {p.relative_to(out).parts[0] for p in outputs} == {
        keys.patient_id(i.patient_id) for i in corpus.instances if i.label not in BURNED_IN
    }
    assert PseudonymPatient.objects.filter(project=pseudonymised).count() == len(
        {i.patient_id for i in corpus.instances if i.label not in BURNED_IN}
    )
    event = AuditEvent.objects.get(action=AuditAction.DEIDENTIFY)
    assert event.details["files"] == len(outputs)


def test_nothing_identifying_of_the_synthetic_data_is_left_by_the_command_line(
    tmp_path, owner, pseudonymised, dicom_data
):
    """The synthetic studies (names, IDs, birth dates, accession numbers,
    institutions, physicians, four patients of two studies each) through
    `manage.py deidentify`: nothing of them in the files or paths."""
    from django.core.management import call_command

    out = tmp_path / "out"
    call_command("deidentify", "--project", pseudonymised.slug, str(dicom_data.root), str(out))
    sources = [dicom_data.root / i.path for i in dicom_data.instances]
    assert len(list(out.rglob("*.dcm"))) == len(sources)
    found = leaks(
        collect(sources), out, shifts=_shifts(pseudonymised),
        outputs_of=_outputs_of(pseudonymised, out),
    )  # fmt: skip
    assert found == []


def test_a_project_that_keeps_burned_in_text_flags_it_in_the_manifest(
    storage, owner, pseudonymised, corpus_node, corpus
):
    import csv
    import io

    from pulls.retrieval.manifests import manifest_chunks

    pseudonymised.keep_burned_in = True
    pseudonymised.save()
    job = _retrieve(owner, pseudonymised, corpus_node, corpus.studies, "get")
    assert len(_outputs(storage, pseudonymised)) == len(corpus.instances)
    rows = list(csv.DictReader(io.StringIO("".join(manifest_chunks(job)))))
    flagged = [row for row in rows if row["burned-in text"]]
    assert len(flagged) == len(BURNED_IN)
    assert any("BurnedInAnnotation is YES" in row["burned-in text"] for row in flagged)
    assert not AuditEvent.objects.filter(action=AuditAction.QUARANTINE, job=job).exists()


def test_the_command_line_refuses_an_identifiable_project(tmp_path, alice, project):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="is identifiable"):
        call_command("deidentify", "--project", project.slug, str(tmp_path), str(tmp_path / "o"))


def _shifts(project: Project) -> dict[bytes, int]:
    return {
        p.patient_id.encode(): p.date_shift_days
        for p in PseudonymPatient.objects.filter(project=project)
    }


def _outputs_of(project: Project, out: Path) -> dict[bytes, set[Path]]:
    """Each original patient's output files (under the pseudonym's folder)."""
    return {
        p.patient_id.encode(): set((out / p.pseudonym).rglob("*.dcm"))
        for p in PseudonymPatient.objects.filter(project=project)
    }
