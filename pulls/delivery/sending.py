"""Sending a project's files to a destination node (a research PACS, XNAT's
DICOM receiver, an Orthanc), study by study.

A sending is saved with one row per study, then worked by a Celery task (or
inline on the command line): each study goes on one association by C-STORE,
in the syntax its files are stored in (pulls.dicom.sending), refused instances
tried again, or to a DICOMweb destination by STOW-RS (pulls.dicomweb.stow),
then counted at the destination by C-FIND (QIDO-RS) where it answers. The
destination's own limits apply: its associations, its windows, its suspension.
A pseudonymised project holds pseudonymised files alone: nothing else can go.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from pydicom.dataset import Dataset

from pulls import selectors
from pulls.audit.events import audit_record
from pulls.delivery.selection import job_selection, project_instances, relative_path
from pulls.dicom import PacsAborted, PacsError, PacsTimeout, PacsUnavailable, Session
from pulls.dicom.sending import TooManyContexts, send_files
from pulls.dicomweb.session import WebSession, WebStatusError
from pulls.dicomweb.stow import stow_files
from pulls.limits import throttle
from pulls.limits import windows as windows_lib
from pulls.models import (
    ACTIVE_JOB_STATUSES,
    AuditAction,
    Job,
    JobKind,
    JobStatus,
    PacsNode,
    Project,
    RetrievedInstance,
    Role,
    Sending,
    SendingStatus,
    SentStudy,
)
from pulls.workers.runner import node_peer

# How long one study may hold a destination's association slot (renewed per study).
SLOT_SECONDS = 3600


def destinations_for(user: Any) -> QuerySet[PacsNode]:
    """The destination nodes granted to ``user`` (operators: all)."""
    return selectors.node_list_for_user(user=user).filter(is_destination=True, is_active=True)


def _check(user: Any, project: Project, destination: PacsNode) -> None:
    if selectors.project_role_for(user=user, project=project) not in (Role.OWNER, Role.MEMBER):
        raise PermissionDenied("Only the project's owners and members send its files.")
    if not destinations_for(user).filter(pk=destination.pk).exists():
        raise ValidationError(
            f"{destination.name} is not a destination you may send to: an operator marks "
            "nodes as destinations and grants them."
        )


def sending_create(
    *,
    project: Project,
    destination: PacsNode,
    user: Any,
    job: Job | None = None,
    request: HttpRequest | None = None,
    enqueue: Callable[[int], None] | None = None,
) -> Sending:
    """A sending of a job's files (or the project's), one row per study, queued."""
    _check(user, project, destination)
    if job is not None and job.kind == JobKind.FIND:
        raise ValidationError("A find job has no files to send: send a retrieval job's.")
    if job is not None and job.status in ACTIVE_JOB_STATUSES:
        raise ValidationError(
            "The job is still queued, running or paused: send its files when it has ended "
            "(or name the destination when making the job)."
        )
    instances = job_selection(job) if job is not None else project_instances(project)
    studies = instances.values("study_instance_uid").annotate(n=Count("pk")).order_by()
    with transaction.atomic():
        sending = Sending.objects.create(
            project=project, job=job, destination=destination, requested_by=user,
            queued_at=timezone.now(),
        )  # fmt: skip
        SentStudy.objects.bulk_create(
            SentStudy(
                sending=sending,
                study_instance_uid=one["study_instance_uid"],
                instances_expected=one["n"],
            )
            for one in studies
        )
        if not sending.studies.exists():
            raise ValidationError(
                "There are no files to send: nothing was retrieved, or the files were deleted."
            )
        audit_record(
            action=AuditAction.SEND,
            actor=user,
            request=request,
            project=project,
            job=job,
            node=destination,
            target=f"sending {sending.code} queued to {destination.name}",
            details={"studies": sending.studies.count(), "instances": instances.count()},
        )
        if enqueue is not None:
            transaction.on_commit(lambda: enqueue(sending.pk))
    return sending


class Unreachable(Exception):
    """The destination could not be reached for a study that may go again."""


@dataclass
class Wait:
    """The sending cannot go on now: why, and in how many seconds to try again."""

    reason: str
    seconds: float


def _verify(destination: PacsNode, study_uid: str) -> int | None:
    """The instances the destination holds of the study, by C-FIND; None when it
    does not answer C-FIND (a plain storage SCP)."""
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    query.NumberOfStudyRelatedInstances = ""
    try:
        opened = (
            WebSession(destination)
            if destination.is_dicomweb
            else Session(node_peer(destination), services=("find",))
        )
        with opened as session:
            answers = list(session.find(query))
    except PacsError:
        return None
    counts = [int(a.get("NumberOfStudyRelatedInstances") or 0) for a in answers]
    return max(counts, default=0) if answers else 0


def _send_study(sending: Sending, study: SentStudy) -> None:
    records = RetrievedInstance.objects.filter(
        project=sending.project, study_instance_uid=study.study_instance_uid
    ).values_list("path", flat=True)
    root = sending.project.storage_dir
    paths = [
        root / p for p in map(relative_path, records) if p is not None and (root / p).is_file()
    ]
    study.instances_expected = len(paths)
    study.attempts += 1
    destination = sending.destination
    try:
        if destination.is_dicomweb:
            result = stow_files(destination, paths)
        else:
            result = send_files(node_peer(destination), paths)
    except (PacsUnavailable, PacsTimeout, PacsAborted, WebStatusError) as exc:
        if not exc.retryable:  # a DICOMweb refusal (401, 404): an operator must act
            study.status, study.message = SendingStatus.FAILED, str(exc)[:2000]
        elif study.attempts < settings.PACSNPULL_MAX_ATTEMPTS:
            # The destination is down or busy: the study goes again later.
            SentStudy.objects.filter(pk=study.pk).update(
                status=SendingStatus.QUEUED,
                attempts=study.attempts,
                lease_until=None,
                message=f"retrying: {exc}"[:2000],
            )
            raise Unreachable(str(exc)) from None
        else:
            study.status = SendingStatus.FAILED
            study.message = f"gave up after {study.attempts} attempts: {exc}"[:2000]
    except (PacsError, TooManyContexts, OSError, ValueError) as exc:
        study.status, study.message = SendingStatus.FAILED, str(exc)[:2000]
    else:
        study.instances_sent, study.bytes_sent = result.sent, result.bytes
        study.instances_converted = result.converted
        study.instances_failed = len(result.failed)
        study.message = "; ".join(
            f"{o.sop_instance}: "
            + (f"status 0x{o.status:04X}" if o.status is not None else "not sent")
            + (f" ({o.message})" if o.message else "")
            for o in result.failed[:10]
        )
        if not result.failed:
            study.instances_at_destination = _verify(sending.destination, study.study_instance_uid)
            held = study.instances_at_destination
            if held is not None and held < study.instances_expected:
                study.message = (
                    f"the destination holds {held} of the {study.instances_expected} instances "
                    "sent (its C-FIND count)"
                )
        study.status = (
            SendingStatus.DONE if not result.failed and not study.message else SendingStatus.FAILED
        )
    study.finished_at = timezone.now()
    study.save()
    audit_record(
        action=AuditAction.SEND,
        actor=sending.requested_by,
        success=study.status == SendingStatus.DONE,
        project=sending.project,
        job=sending.job,
        node=sending.destination,
        target=f"study {study.study_instance_uid} to {sending.destination.name}",
        details={
            "sending": str(sending.code),
            "instances": study.instances_expected,
            "sent": study.instances_sent,
            "failed": study.instances_failed,
            "converted": study.instances_converted,
            "bytes": study.bytes_sent,
            "at_destination": study.instances_at_destination,
        },
        message=study.message[:500],
    )


def _hold(destination: PacsNode) -> Wait | None:
    if destination.suspended:
        return Wait(f"waiting: node {destination.name} is suspended by an operator", 60)
    windows = destination.windows
    if not windows_lib.window_open(windows):
        opening = windows_lib.window_next_opening(windows)
        return Wait(
            f"waiting for the window at {windows_lib.window_describe(opening)}",
            max(5.0, (opening - timezone.now()).total_seconds()),
        )
    return None


def _claim(study: SentStudy) -> bool:
    """Take the study for this worker (queued, or running with its lease run out)."""
    now = timezone.now()
    return bool(
        SentStudy.objects.filter(pk=study.pk)
        .filter(
            Q(status=SendingStatus.QUEUED) | Q(status=SendingStatus.RUNNING, lease_until__lt=now)
        )
        .update(status=SendingStatus.RUNNING, lease_until=now + timedelta(seconds=SLOT_SECONDS))
    )


def sending_run(sending_id: int) -> Wait | None:
    """Send the sending's studies still to go; a Wait when a limit holds it back."""
    sending = Sending.objects.select_related("project", "destination", "job", "requested_by").get(
        pk=sending_id
    )
    if sending.status in (SendingStatus.DONE, SendingStatus.FAILED):
        return None
    todo = sending.studies.exclude(status__in=[SendingStatus.DONE, SendingStatus.FAILED])
    try:
        # Checked again, as a retrieval's worker does: a membership or a grant
        # withdrawn since the sending was queued stops what is still to go.
        _check(sending.requested_by, sending.project, sending.destination)
    except (PermissionDenied, ValidationError) as exc:
        reason = " ".join(getattr(exc, "messages", None) or [str(exc)])
        todo.update(status=SendingStatus.FAILED, message=f"not sent: {reason}"[:2000],
                    finished_at=timezone.now())  # fmt: skip
        Sending.objects.filter(pk=sending.pk).update(
            status=SendingStatus.FAILED, waiting_reason="", finished_at=timezone.now()
        )
        return None
    Sending.objects.filter(pk=sending.pk).update(
        status=SendingStatus.RUNNING, queued_at=timezone.now()
    )
    for study in todo.order_by("pk"):
        destination = PacsNode.objects.get(pk=sending.destination_id)
        wait = _hold(destination)
        slot = None if wait else throttle.association_slot(destination, ttl=SLOT_SECONDS)
        if wait is None and slot is None:
            wait = Wait(
                f"waiting: throttled: node {destination.name} allows "
                f"{destination.max_associations} concurrent associations and all are in use",
                5,
            )
        if wait is not None:
            Sending.objects.filter(pk=sending.pk).update(
                waiting_reason=wait.reason[:300], queued_at=timezone.now()
            )
            return wait
        try:
            if _claim(study):
                _send_study(sending, study)
                Sending.objects.filter(pk=sending.pk).update(queued_at=timezone.now())
        except Unreachable as exc:
            wait = Wait(f"retrying: {exc}", max(1.0, settings.PACSNPULL_RETRY_SECONDS))
            Sending.objects.filter(pk=sending.pk).update(
                waiting_reason=wait.reason[:300], queued_at=timezone.now()
            )
            return wait
        finally:
            slot.release()
    if todo.exists():  # another worker holds a study still: it closes the sending
        return None
    failed = sending.studies.filter(status=SendingStatus.FAILED).exists()
    Sending.objects.filter(pk=sending.pk).update(
        status=SendingStatus.FAILED if failed else SendingStatus.DONE,
        waiting_reason="",
        finished_at=timezone.now(),
    )
    return None


def jobs_to_send() -> QuerySet[Job]:
    """Ended retrieval jobs that name a destination and have no sending yet."""
    return (
        Job.objects.filter(
            destination__isnull=False,
            status__in=[JobStatus.DONE, JobStatus.FAILED],
            files_deleted_at__isnull=True,
            sendings__isnull=True,
        )
        .exclude(kind=JobKind.FIND)
        .exclude(instances_received=0)
    )


def queue_due(enqueue: Callable[[int], None]) -> int:
    """A sending for each ended job that names a destination, and sendings whose
    message was lost queued again (the reconciler)."""
    made = 0
    lost = Sending.objects.filter(
        status__in=[SendingStatus.QUEUED, SendingStatus.RUNNING],
        queued_at__lt=timezone.now() - timedelta(seconds=SLOT_SECONDS),
    )
    for sending_id in lost.values_list("pk", flat=True)[:50]:
        Sending.objects.filter(pk=sending_id).update(queued_at=timezone.now())
        enqueue(sending_id)
        made += 1
    for job in jobs_to_send().select_related("project", "destination", "owner")[:50]:
        try:
            sending_create(
                project=job.project, destination=job.destination, user=job.owner, job=job,
                enqueue=enqueue,
            )  # fmt: skip
        except (ValidationError, PermissionDenied) as exc:
            audit_record(
                action=AuditAction.SEND,
                actor=job.owner,
                success=False,
                project=job.project,
                job=job,
                node=job.destination,
                target=f"job's files to {job.destination.name}: not sent",
                message=" ".join(getattr(exc, "messages", [str(exc)])),
            )
            Job.objects.filter(pk=job.pk).update(destination=None)
            continue
        made += 1
    return made
