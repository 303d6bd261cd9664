"""A project's de-identification, from its settings (pulls.models.Project)."""

from __future__ import annotations

from collections.abc import Callable

from pulls.deid.files import Pseudonymiser
from pulls.deid.keys import Keys
from pulls.deid.profile import Options
from pulls.models import Project, PseudonymPatient


def options_of(project: Project) -> Options:
    return Options(
        retain_dates=project.retain_dates,
        retain_patient_characteristics=project.retain_patient_characteristics,
        retain_device_identity=project.retain_device_identity,
        retain_institution_identity=project.retain_institution_identity,
        clean_descriptors=project.clean_descriptors,
        retain_safe_private=project.retain_safe_private,
    )


def given_pseudonyms(project: Project) -> dict[str, str]:
    """Pseudonyms query files gave, by original PatientID."""
    return dict(
        PseudonymPatient.objects.filter(project=project, given=True).values_list(
            "patient_id", "pseudonym"
        )
    )


def keys_of(project: Project) -> Keys:
    return Keys(bytes.fromhex(project.pseudonym_secret), given=given_pseudonyms(project))


def pseudonymiser_for(project: Project) -> Pseudonymiser | None:
    """What de-identifies the instances entering ``project``; None if it keeps them as they are."""
    if not project.is_pseudonymised:
        return None
    return Pseudonymiser(
        bytes.fromhex(project.pseudonym_secret),
        options_of(project),
        given=given_pseudonyms(project),
        keep_burned_in=project.keep_burned_in,
    )


def uid_in(project: Project) -> Callable[[str], str]:
    """How the project's records name a UID the PACS gave (the same UID, or its
    replacement: a pseudonymised project holds only those)."""
    if not project.is_pseudonymised:
        return str
    return Keys(bytes.fromhex(project.pseudonym_secret)).uid
