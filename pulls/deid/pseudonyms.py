"""Pseudonyms a query file gives: its ``Pseudonym`` column, for the row's PatientID.

Checked when the job is made, against each other and against the project's
mapping (a patient keeps one pseudonym, a pseudonym stands for one patient),
and saved with the job: from then on the patient's files carry it, in this
job and every later one (``projects.pseudonymiser_for``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from django.core.exceptions import ValidationError

from pulls.deid.keys import Keys
from pulls.dicom.identifiers import PSEUDONYM
from pulls.models import Project, PseudonymPatient

# What the project's key makes (keys.Keys.patient_id): a given pseudonym may not
# look like one, or it could collide with a patient's derived pseudonym.
_DERIVED = re.compile(r"P[A-Z2-7]{16}")
_WILDCARDS = set("*?\\")


def pseudonyms_given(
    project: Project, rows: Iterable[Mapping[str, object]], numbers: Iterable[int]
) -> list[PseudonymPatient]:
    """The new pseudonyms of these rows, checked; raises ValidationError naming
    each row, key and fix."""
    problems: list[str] = []
    wanted: dict[str, tuple[str, int]] = {}  # PatientID -> (pseudonym, row)
    owners: dict[str, tuple[str, int]] = {}  # pseudonym -> (PatientID, row)
    for n, row in zip(numbers, rows, strict=False):
        value = str(row.get(PSEUDONYM, "") or "").strip()
        if not value:
            continue
        where = f"row {n}, {PSEUDONYM}"
        if not project.is_pseudonymised:
            problems.append(
                f"{where}: the project {project.name} keeps files as the PACS holds them and "
                "takes no pseudonyms: remove the column, or choose a pseudonymised project"
            )
            continue
        patient = str(row.get("PatientID", "") or "").strip()
        if not patient or _WILDCARDS & set(patient):
            problems.append(f"{where}: needs the row's exact PatientID, the patient it stands for")
            continue
        if _DERIVED.fullmatch(value):
            problems.append(
                f"{where}: {value} looks like a pseudonym the portal makes itself: choose another"
            )
            continue
        earlier = wanted.get(patient)
        if earlier and earlier[0] != value:
            problems.append(
                f"{where}: PatientID {patient} has the pseudonym {earlier[0]} in row {earlier[1]}"
            )
            continue
        other = owners.get(value)
        if other and other[0] != patient:
            problems.append(
                f"{where}: {value} stands for another patient in row {other[1]}: a pseudonym "
                "names one patient"
            )
            continue
        wanted[patient] = (value, n)
        owners[value] = (patient, n)
    if wanted:
        mapped = PseudonymPatient.objects.filter(project=project)
        for known in mapped.filter(patient_id__in=list(wanted)):
            value, n = wanted[known.patient_id]
            if known.pseudonym != value:
                problems.append(
                    f"row {n}, {PSEUDONYM}: PatientID {known.patient_id} is {known.pseudonym} in "
                    f"this project already: give that, or leave the cell empty"
                )
        for known in mapped.filter(pseudonym__in=[v for v, _ in wanted.values()]):
            patient, n = owners[known.pseudonym]
            if known.patient_id != patient:
                problems.append(
                    f"row {n}, {PSEUDONYM}: {known.pseudonym} stands for another patient of "
                    "this project already: choose another"
                )
    if problems:
        raise ValidationError(problems)
    if not wanted:
        return []
    keys = Keys(bytes.fromhex(project.pseudonym_secret))
    known = set(
        PseudonymPatient.objects.filter(project=project, patient_id__in=list(wanted)).values_list(
            "patient_id", flat=True
        )
    )
    return [
        PseudonymPatient(
            project=project,
            patient_id=patient,
            pseudonym=value,
            given=True,
            date_shift_days=keys.shift_days(patient),
        )  # fmt: skip
        for patient, (value, _) in wanted.items()
        if patient not in known
    ]
