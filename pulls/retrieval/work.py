"""Retrieving one item (a study or a series) into the project's storage.

Expected count from the PACS, then C-MOVE (to our storage SCP) or C-GET (on the
association), a bounded wait for late arrivals, placement into the project's
layout, and a count of what is really there. Never trusts the final status.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError

from pulls.deid.files import BurnedIn
from pulls.deid.projects import pseudonymiser_for
from pulls.deid.walker import UnreadableDataSet
from pulls.deid.writer import PseudonymisingWriter
from pulls.dicom import (
    PacsAborted,
    PacsError,
    PacsStatusError,
    PacsTimeout,
    PacsUnavailable,
    Peer,
    Session,
    echo,
)
from pulls.dicom.completeness import assess, wait_for_arrivals
from pulls.dicom.counting import count_one
from pulls.dicom.getting import get_as_stored
from pulls.dicom.identifiers import retrieve_identifier
from pulls.dicom.placement import header_keys, place_instance
from pulls.dicom.receiving import Placed, ProjectWriter
from pulls.dicom.results import RetrieveResult
from pulls.dicom.staging import (
    index_clear,
    staged_entries,
    staged_index,
    staged_names,
    study_dir,
)
from pulls.jobs.items import Outcome, Pending
from pulls.jobs.space import DiskFull, check_free_space
from pulls.models import (
    Job,
    JobItem,
    JobKind,
    Project,
)
from pulls.retrieval.guard import JobStopped, StallGuard
from pulls.retrieval.quarantine import set_aside_unrequested, set_aside_withheld
from pulls.retrieval.records import (
    InstanceRecords,
    present_count,
    present_sops,
    record_instances,
)

log = logging.getLogger(__name__)


class IncompleteRetrieval(PacsError):
    """Instances are missing or failed; retried until the attempts run out."""

    retryable = True

    def __init__(self, message: str, **counts: int) -> None:
        super().__init__(message)
        self.counts = counts


def _raise_if_our_scp_is_down(node, error: PacsStatusError) -> None:
    """Tell "the PACS does not know us" from "our storage SCP is down"."""
    if error.status not in (0xA801, 0xA702) and not 0xC000 <= error.status <= 0xCFFF:
        return
    if node.effective_move_destination() != settings.PACSNPULL_AE_TITLE:
        return  # another AE's SCP: not ours to check
    peer = Peer(
        host=settings.PACSNPULL_SCP_HOST,
        port=settings.PACSNPULL_SCP_PORT,
        called_ae=settings.PACSNPULL_AE_TITLE,
        calling_ae=node.effective_calling_ae(),
        connect_timeout=2,
        acse_timeout=5,
        dimse_timeout=5,
    )
    deadline = time.monotonic() + settings.PACSNPULL_SCP_WAIT_SECONDS
    was_down = False
    while True:
        try:
            echo(peer)
        except (PacsUnavailable, PacsTimeout):
            was_down = True
            if time.monotonic() >= deadline:
                raise PacsUnavailable(
                    f"the portal's storage SCP ({peer.describe()}) does not answer, so the "
                    "PACS could not send the instances: start it (manage.py storescp); "
                    "the retrieval is retried"
                ) from None
            time.sleep(0.5)
            continue
        except PacsError:
            pass  # something answered: our SCP is up
        if not was_down:
            return  # the PACS's error stands
        raise IncompleteRetrieval(
            f"the portal's storage SCP was not answering during the C-MOVE ({error}); retrying"
        )


def project_writer(project: Project) -> ProjectWriter:
    """Where a C-GET's instances go: straight into the project, de-identified
    on the way into a pseudonymised one (the originals never enter its folder)."""
    pseudonymiser = pseudonymiser_for(project)
    if pseudonymiser is None:
        return ProjectWriter(project.storage_dir)
    return PseudonymisingWriter(project.storage_dir, pseudonymiser, settings.PACSNPULL_STAGING_DIR)


def _set_aside_withheld(job: Job | None, placed: list[Placed]) -> None:
    withheld = [p for p in placed if p.withheld]
    if withheld:
        set_aside_withheld(withheld, job=job)


def _place_pseudonymised(pseudonymiser, staged: str, root: str, keys: dict[str, str]) -> Placed:
    """A staged original de-identified into the project (and removed); or, if
    the project does not take it, left where it is to be set aside."""
    try:
        done = pseudonymiser.place_file(staged, root)
    except (BurnedIn, UnreadableDataSet) as why:
        reason = why.reason if isinstance(why, BurnedIn) else f"it cannot be de-identified: {why}"
        return Placed(
            path=staged, patient_id="", study_instance_uid="", series_instance_uid="",
            sop_instance_uid=pseudonymiser.keys.uid(keys["SOPInstanceUID"]),
            modality=keys.get("Modality", ""), size=0,
            source_patient_id=keys["PatientID"], source_study_uid=keys["StudyInstanceUID"],
            source_series_uid=keys["SeriesInstanceUID"], burned_in=reason, withheld=True,
        )  # fmt: skip
    os.unlink(staged)
    return done.placed()


def _place_staged(
    project: Project, staging: Path, study: str, series: str | None, *, job: Job | None = None
) -> list[Placed]:
    """Move this study's (series') staged files into the project (a pseudonymised
    project's de-identified: pulls.deid); their keys and sizes come from the
    SCP's index where it has the file, else from the file."""
    placed = []
    pseudonymiser = pseudonymiser_for(project)
    folder, root = str(study_dir(staging, study)), str(project.storage_dir)
    index = staged_index(staging, study)
    for name, inode in staged_entries(staging, study):
        staged = f"{folder}/{name}"
        noted = index.get(name)
        try:
            if noted is not None and noted[0] == inode:
                _, size, keys = noted
            else:
                size, keys = os.stat(staged).st_size, header_keys(staged)
            if series and keys["SeriesInstanceUID"] != series:
                continue  # another series of the study: not ours to take
            if pseudonymiser is not None:
                placed.append(_place_pseudonymised(pseudonymiser, staged, root, keys))
            else:
                placed.append(place_instance(staged, root, keys=keys, size=size))
        except FileNotFoundError:
            continue  # taken meanwhile by the worker of another series of the study
    index_clear(staging, study)
    _set_aside_withheld(job, placed)
    return placed


def _collect(session: Session, job: Job, study: str, series: str | None) -> list[Placed]:
    """What a C-GET wrote straight into the project (see ProjectWriter); what
    it received of other studies or series goes to quarantine."""
    writer = session.writer
    mine: dict[str, Placed] = {}  # by SOP instance: a C-GET done again places some twice
    others: list[Placed] = []  # of the next rows' studies, fetched in a list (_get)
    for p in writer.placed_instances:
        if p.asked_study == study and (not series or p.asked_series == series):
            mine[p.sop_instance_uid] = p
        else:
            others.append(p)
    if others:
        writer.placed_instances[:] = others
    else:
        writer.placed_instances.clear()
    _set_aside_withheld(job, list(mine.values()))
    unrequested, writer.unrequested = writer.unrequested, []
    if unrequested:
        try:
            set_aside_unrequested(job.project.storage_dir, unrequested, job=job)
        except (OSError, DatabaseError) as exc:
            # Not this row's concern: they stay in .unrequested, outside the
            # layout, and the reconciler's sweep moves them later.
            log.warning(  # no path: it names a study
                "job %s: %d instances not asked for left in .unrequested: %s",
                job.pk, len(unrequested), getattr(exc, "strerror", None) or type(exc).__name__,
            )  # fmt: skip
    return list(mine.values())


def on_connection(job: Job) -> bool:
    """Whether the row's instances arrive on our association (C-GET) and are
    written into the project as they come; a C-MOVE's, and a WADO-RS
    retrieval's, wait in the staging area to be placed."""
    return job.kind == JobKind.GET and not job.node.is_dicomweb


def _take(
    session: Session, job: Job, staging: Path, study: str, series: str | None
) -> list[Placed]:
    """The instances of the study (series) now in the project, not yet recorded."""
    if on_connection(job):
        return _collect(session, job, study, series)
    return _place_staged(job.project, staging, study, series, job=job)


def storage_classes_of(item: JobItem) -> list[str] | None:
    """The SOP classes the PACS said the row's study holds (its count, or the
    find's), which its C-GET proposes; None when not known, and on a retry (in
    case the list was wrong): then an image-level C-FIND says (getting)."""
    if item.attempts > 1:
        return None
    named = getattr(item, "classes_now", None) or item.sop_classes
    return named.split("\\") if named else None


def storage_classes_known(items: list[JobItem]) -> set[str]:
    """The SOP classes the PACS named for these rows' studies (see storage_classes_of)."""
    return {uid for item in items for uid in storage_classes_of(item) or ()}


def _get(
    session: Session, item: JobItem, identifier, model: str, guard: StallGuard, expected: int
) -> RetrieveResult:
    """C-GET of the row, every instance as the PACS holds it (getting.get_as_stored),
    on an association offering its study's SOP classes (the PACS's list, or what
    an image-level C-FIND finds: storage_classes_of)."""
    keys = item.identifier
    study, series = keys["StudyInstanceUID"], keys.get("SeriesInstanceUID") or None
    writer = session.writer
    listed = getattr(item, "study_list", None)
    if listed is not None:  # fetched with the next rows' studies (prepare_rows)
        listed.fetch(session, on_progress=guard)
        if listed.result is not None and (guard.stopped_as or guard.tripped):
            return listed.result  # stopped: the row ends as a stopped row does
        result = listed.result_for(writer, study, item.present_now, expected)
        if result is not None:
            return result
    # Instances of other studies or series are kept out of the project (_collect).
    writer.expect(study, series)

    def arrived() -> int:
        return len(
            {
                p.sop_instance_uid
                for p in writer.placed_instances
                if p.asked_study == study and (not series or p.asked_series == series)
            }
        )

    return get_as_stored(
        session,
        identifier,
        study_uid=study,
        series_uid=series,
        patient_id=keys.get("PatientID"),
        model=model,
        classes=storage_classes_of(item),
        expected=expected,
        arrived=arrived,
        on_progress=guard,
        stopped=lambda: bool(guard.stopped_as or guard.tripped),
    )


def _transfer(
    session: Session, job: Job, item: JobItem, identifier, model: str, guard: StallGuard,
    expected: int,
):  # fmt: skip
    node = job.node
    if node.is_dicomweb:
        keys = item.identifier
        return session.retrieve(
            study=keys["StudyInstanceUID"], series=keys.get("SeriesInstanceUID") or None,
            staging=settings.PACSNPULL_STAGING_DIR, on_progress=guard,
        )  # fmt: skip
    if job.kind == JobKind.GET:
        return _get(session, item, identifier, model, guard, expected)
    try:
        return session.move(
            identifier,
            destination=node.effective_move_destination(),
            destination_address=(settings.PACSNPULL_SCP_HOST, settings.PACSNPULL_SCP_PORT),
            model=model,
            on_progress=guard,
        )
    except PacsStatusError as exc:
        # A PACS that cannot reach our storage SCP may say 0xA801 or 0xC000 as if
        # it did not know us: if our SCP is down, that heals.
        _raise_if_our_scp_is_down(node, exc)
        raise


def counted_before(item: JobItem) -> bool:
    # The find this retrieval came from counted the study, or the count of an
    # earlier chunk did (counted ahead): used on the first attempt (no C-FIND,
    # no query token). A retry asks the PACS, in case the study changed.
    return item.attempts <= 1 and item.instances_expected > 0


# Free space is looked at before each row's transfer (two statvfs and path
# checks, ~25 µs: 6 % of a one-instance study's work on the association),
# except within _SPACE_EVERY seconds of a look that found more than
# _SPACE_SPARE bytes beyond PACSNPULL_MIN_FREE_BYTES: half a second of
# retrieving at 500 MB/s cannot take them.
_SPACE_EVERY = 0.5
_SPACE_SPARE = 256 << 20


def _check_space(job: Job) -> None:
    """check_free_space for the chunk's ``job``, unless it has just found plenty."""
    now = time.monotonic()
    last = getattr(job, "space_checked", None)  # (when, the least free bytes then)
    if (
        last is not None
        and now - last[0] < _SPACE_EVERY
        and last[1] - settings.PACSNPULL_MIN_FREE_BYTES > _SPACE_SPARE
    ):
        return
    job.space_checked = (now, check_free_space(job.project))


def retrieve_item(session: Session, job: Job, item: JobItem) -> Outcome | Pending:
    """The row's work on the association (count, C-MOVE/C-GET); what remains
    (waiting for late arrivals, placing, counting, recording) is returned as a
    Pending for the runner to finish while the next row's transfer goes on."""
    node = job.node
    keys = dict(item.identifier)
    study = keys["StudyInstanceUID"]
    series = keys.get("SeriesInstanceUID") or None
    model = node.query_model
    if counted_before(item):
        expected = item.instances_expected
    elif getattr(item, "expected_now", None) is not None:
        expected = item.expected_now  # counted with the rows around it (prepare_rows)
    else:
        counted = count_one(
            session, study_uid=study, series_uid=series, patient_id=keys.get("PatientID"),
            model=model, classes=on_connection(job),
        )  # fmt: skip
        expected = counted.instances
        if counted.sop_classes:
            item.classes_now = "\\".join(counted.sop_classes)
    present = getattr(item, "present_now", None)
    if present is None:
        present = present_sops(job.project, study, series)
    if len(present) >= expected > 0:  # nothing to do
        return Outcome({"instances_expected": expected, "instances_received": len(present)})
    listed = getattr(item, "study_list", None)
    if listed is None or not listed.fetched:
        # (A study list's C-GET brought this row's study with an earlier row's:
        # its disk was checked then, and a disk it filled is the row's to say.)
        _check_space(job)
    staging = settings.PACSNPULL_STAGING_DIR
    identifier = retrieve_identifier(keys, model=model)
    guard = StallGuard(node.stall_limit, job_id=job.pk)
    try:
        result = _transfer(session, job, item, identifier, model, guard, expected)
    except PacsAborted:
        if not guard.stopped_as:
            raise
        # We aborted a PACS that ignored our C-CANCEL: keep what arrived whole.
        record_instances(job.project, _take_or_full(session, job, staging, study, series))
        raise JobStopped(
            guard.stopped_as,
            instances_expected=expected,
            instances_received=present_count(job.project, study, series),
        ) from None
    if guard.stopped_as:
        # Cancelled, paused or suspended: what arrived is kept, the item goes back.
        placed = _take_or_full(session, job, staging, study, series)
        record_instances(job.project, placed)
        raise JobStopped(guard.stopped_as, **_counts(result, expected, present, placed))
    # This row's C-GET instances, before the next row's arrive on the association.
    received = _collect(session, job, study, series) if on_connection(job) else None

    def finish() -> Outcome:
        if received is None and not node.is_dicomweb:
            # Some PACS answer before their last C-STORE reached our SCP: wait, bounded.
            wait_for_arrivals(
                lambda: len(staged_names(staging, study)),
                target=expected,
                idle_timeout=settings.PACSNPULL_ARRIVAL_WAIT_SECONDS,
            )
        if received is None:
            placed = _take_or_full(session, job, staging, study, series)
        else:
            placed = received
        return _conclude(job, result, expected, present, placed, tripped=guard.tripped)

    return Pending(finish)


def record_unworked(job: Job, writer: ProjectWriter) -> None:
    """Record what a C-GET placed in the project for rows that were not worked
    (a study list's next rows, when the chunk stopped before them): the rows,
    released or retried, then find their instances there."""
    if writer.placed_instances:
        placed, writer.placed_instances = writer.placed_instances, []
        record_instances(job.project, placed)


def _take_or_full(
    session: Session, job: Job, staging: Path, study: str, series: str | None
) -> list[Placed]:
    try:
        return _take(session, job, staging, study, series)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(_disk_full_message(job.project)) from None
        raise


def _disk_full_message(project: Project) -> str:
    return f"the disk of {project.storage_dir} is full: free some space, then resume the job"


def _counts(
    result: RetrieveResult, expected: int, present: set[str], placed: list[Placed]
) -> dict[str, int]:
    return {
        "instances_expected": expected,
        # What was there (checked on disk before the transfer) and what has just been placed.
        "instances_received": len(present.union(p.sop_instance_uid for p in placed)),
        "instances_failed": result.failed + result.unwritten,
        "bytes_received": sum(p.size for p in placed),
    }


def _conclude(
    job: Job,
    result: RetrieveResult,
    expected: int,
    present: set[str],
    placed: list[Placed],
    *,
    tripped: bool,
) -> Outcome:
    """Complete, or why not; the placed instances are recorded either way."""
    counts = _counts(result, expected, present, placed)
    total = counts["instances_received"]
    verdict = assess(result, expected=expected, count_received=lambda: total, idle_timeout=0)
    if tripped or total < expected or result.no_space:
        record_instances(job.project, placed)  # the item does not end here: record them now
    if tripped:
        raise IncompleteRetrieval(
            f"the PACS sent {job.node.stall_limit} responses without progress: cancelled; "
            f"{total} of {expected} instances in the project",
            **counts,
        )
    if result.no_space:  # C-GET: instances answered, then not written for want of space
        raise DiskFull(_disk_full_message(job.project))
    if result.failed:
        # Our receivers answer 0xA700 on a full disk: then sub-operations fail.
        check_free_space(job.project)
    if total < expected:
        raise IncompleteRetrieval(
            f"{verdict.message}; {total} of {expected} in the project", **counts
        )
    # Recorded in the transaction that marks the item done (one write, not two).
    return Outcome(counts, save=InstanceRecords(job.project, placed))
