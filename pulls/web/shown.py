"""Matches and query rows as a viewer of a pseudonymised project sees them
(pulls.deid.shown): stand-ins with the same fields the templates read."""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace

from pulls.deid.shown import Shown
from pulls.models import FindResult, JobItem


def _date(value: str) -> date | None:
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except (ValueError, IndexError):
        return None


def shown_match(shown: Shown, match: FindResult) -> SimpleNamespace:
    attributes = shown.attributes(match.attributes)
    return SimpleNamespace(
        item=match.item,
        attributes=attributes,
        patient_id=attributes.get("PatientID", ""),
        study_date=_date(attributes.get("StudyDate", "")),
        modality=match.modality,
        accession_number=attributes.get("AccessionNumber", ""),
        study_instance_uid=attributes.get("StudyInstanceUID", ""),
        instance_count=match.instance_count,
    )


def shown_item(shown: Shown, item: JobItem) -> JobItem:
    item.identifier = shown.attributes(item.identifier)  # not saved: shown only
    return item
