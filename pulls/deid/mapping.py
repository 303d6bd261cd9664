"""The mapping of a pseudonymised project: original and pseudonym, kept in the
database only (never in the project's folder), for its owners alone.

Recorded as instances are placed (``record_mapping``, in the transaction that
records them); read by the owners' mapping page and CSV (pulls.web.mapping),
each view an audit event.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from pulls.deid.keys import Keys
from pulls.dicom.receiving import Placed
from pulls.jobs.exports import csv_stream
from pulls.models import Project, PseudonymPatient, PseudonymStudy

COLUMNS = [
    "PatientID", "Pseudonym", "given", "date shift (days back)",
    "StudyInstanceUID", "pseudonymised StudyInstanceUID", "AccessionNumber",
    "pseudonymised AccessionNumber",
]  # fmt: skip


def record_mapping(project: Project, placed: Iterable[Placed]) -> None:
    """The patients and studies of these placed instances, once each."""
    keys = Keys(bytes.fromhex(project.pseudonym_secret))
    patients: dict[str, PseudonymPatient] = {}
    studies: dict[str, PseudonymStudy] = {}
    for item in placed:
        if item.withheld or not item.source_study_uid:
            continue
        if item.source_patient_id not in patients:
            patients[item.source_patient_id] = PseudonymPatient(
                project=project,
                patient_id=item.source_patient_id[:64],
                pseudonym=item.patient_id[:64],
                date_shift_days=item.shift_days,
            )
        if item.source_study_uid not in studies:
            accession = item.source_accession
            studies[item.source_study_uid] = PseudonymStudy(
                project=project,
                patient_id=item.source_patient_id[:64],
                study_instance_uid=item.source_study_uid[:64],
                pseudonym_study_uid=item.study_instance_uid[:64],
                accession_number=accession[:64],
                pseudonym_accession=keys.accession(accession) if accession else "",
            )
    if patients:  # a pseudonym given by a query file is there already, with its shift
        PseudonymPatient.objects.bulk_create(patients.values(), ignore_conflicts=True)
    if studies:
        PseudonymStudy.objects.bulk_create(studies.values(), ignore_conflicts=True)


def mapping_rows(project: Project) -> Iterator[tuple]:
    """One row per study (a patient with no study yet: one row of its own)."""
    patients = {p.patient_id: p for p in PseudonymPatient.objects.filter(project=project)}
    seen = set()
    for study in PseudonymStudy.objects.filter(project=project).iterator(chunk_size=2000):
        patient = patients.get(study.patient_id)
        seen.add(study.patient_id)
        yield (
            study.patient_id, patient.pseudonym if patient else "",
            "yes" if patient and patient.given else "",
            patient.date_shift_days if patient else "",
            study.study_instance_uid, study.pseudonym_study_uid,
            study.accession_number, study.pseudonym_accession,
        )  # fmt: skip
    for patient in patients.values():
        if patient.patient_id not in seen:
            yield (patient.patient_id, patient.pseudonym, "yes" if patient.given else "",
                   patient.date_shift_days, "", "", "", "")  # fmt: skip


def mapping_csv(project: Project) -> Iterator[str]:
    return csv_stream(COLUMNS, mapping_rows(project))
