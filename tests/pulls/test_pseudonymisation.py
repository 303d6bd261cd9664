"""Pseudonymised projects (pulls.deid): what enters their folder names nobody,
the same patient keeps the same pseudonym, UIDs and date shift from job to job,
references between objects still resolve, and the pixels are untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from pulls.cli.inline import run_inline
from pulls.models import (
    AuditAction,
    AuditEvent,
    ItemStatus,
    JobStatus,
    Membership,
    Project,
    PseudonymPatient,
    PseudonymStudy,
    RetrievedInstance,
    Role,
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
def owner(db):
    from accounts.models import User

    return User.objects.create_user("pia", password="pia-password-1")


@pytest.fixture
def pseudonymised(owner, bob):
    project = Project.objects.create(name="Pseudonymised", slug="pseudonymised")
    Membership.objects.create(project=project, user=owner, role=Role.OWNER)
    Membership.objects.create(project=project, user=bob, role=Role.VIEWER)
    return project


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
        assert ds.PatientID == ds.PatientName == path.relative_to(storage / pseudonymised.slug).parts[0]
        if "PixelData" in ds:
            assert ds.PixelData in by_shape  # the very bytes the archive holds

    quarantined = AuditEvent.objects.filter(action=AuditAction.QUARANTINE, job=job)
    assert quarantined.exists()
    assert all("burned-in text" in event.message for event in quarantined)
