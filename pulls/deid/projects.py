"""A project's de-identification: its pseudonymiser and names, from its settings
(pulls.models.Project), and the services that set them."""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import HttpRequest

from accounts.models import User
from pulls import selectors
from pulls.deid.files import Pseudonymiser
from pulls.deid.keys import Keys
from pulls.deid.profile import Options
from pulls.deid.shown import Shown
from pulls.models import Membership, Project, PseudonymPatient, Role


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


def owners_may_pull_identifiable(project: Project) -> bool:
    """Whether an owner of the project holds the operators' grant."""
    return project.memberships.filter(role=Role.OWNER, user__may_pull_identifiable=True).exists()


def require_identifiable_grant(project: Project) -> None:
    """An identifiable project takes files only while an owner holds the grant."""
    if project.is_pseudonymised or owners_may_pull_identifiable(project):
        return
    raise ValidationError(
        f"The project {project.name} keeps files as the PACS holds them, with names and IDs, "
        "and none of its owners may pull identifiable data: ask an operator for that grant, "
        "or retrieve into a pseudonymised project."
    )


def _settings(project: Project) -> dict[str, object]:
    return {name: getattr(project, name) for name in Project.DEIDENTIFICATION_FIELDS}


def project_create(
    *, user: User, fields: dict[str, object], request: HttpRequest | None = None
) -> Project:
    """A project owned by ``user``; identifiable only if the user holds the grant."""
    project = Project(**fields)
    if not project.is_pseudonymised and not user.may_pull_identifiable:
        raise ValidationError(
            {
                "deidentification": "You may not pull identifiable data: choose pseudonymised, "
                "or ask an operator for the grant."
            }
        )
    project.full_clean()
    with transaction.atomic():  # both audited (pulls.audit.changes)
        project.save()
        Membership.objects.create(project=project, user=user, role=Role.OWNER)
    return project


def project_set_deidentification(
    *, project: Project, user: User, fields: dict[str, object], request: HttpRequest | None = None
) -> Project:
    """An owner changes what enters the project: refused once files exist."""
    if selectors.membership_role(user=user, project=project) != Role.OWNER:
        raise PermissionDenied("Only the project's owners change its de-identification.")
    before = _settings(project)
    for name, value in fields.items():
        setattr(project, name, value)
    if not project.is_pseudonymised and not user.may_pull_identifiable:
        raise ValidationError(
            {"deidentification": "You may not pull identifiable data: ask an operator."}
        )
    project.full_clean()  # refuses a change once the project holds files
    changed = [k for k, v in _settings(project).items() if before[k] != v]
    if changed:
        project.save(update_fields=changed)  # audited (pulls.audit.changes)
    return project


def shown_for(*, project: Project, user: User) -> Shown | None:
    """How ``user`` sees the project's matches and query rows: a viewer of a
    pseudonymised project as its files are (``shown``); None: as found."""
    if not project.is_pseudonymised:
        return None
    if selectors.project_role_for(user=user, project=project) != Role.VIEWER:
        return None
    return Shown(keys_of(project), options_of(project))
