"""Working a chunk of items: claim, one association for all of them, record outcomes."""

from __future__ import annotations

import datetime as dt
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone
from pydicom.dataset import Dataset

from pulls.dicom import PacsError, Peer, Session
from pulls.dicom.identifiers import (
    IdentifierError,
    find_row,
    identifier_from_row,
    match_to_dict,
)
from pulls.dicom.proposals import association_request_prepare
from pulls.dicom.staging import remove_cut_writes
from pulls.dicomweb.session import WebSession
from pulls.jobs import items as item_life
from pulls.jobs import queueing
from pulls.jobs.space import DiskFull
from pulls.limits import throttle
from pulls.limits import windows as windows_lib
from pulls.models import (
    QUEUE_INTERACTIVE,
    AuditAction,
    FindResult,
    Job,
    JobItem,
    JobKind,
    JobStatus,
    PacsNode,
    Protocol,
)
from pulls.retrieval.guard import SUSPENDED, JobStopped
from pulls.retrieval.preparing import prepare_rows
from pulls.retrieval.work import (
    project_writer,
    record_unworked,
    retrieve_item,
    storage_classes_known,
)
from pulls.workers.outcomes import RowFinisher, pause_for_disk, record_failure

log = logging.getLogger(__name__)

# Renew the lease when this much of it has passed during one chunk.
_RENEW_FRACTION = 0.5
# A chunk that cannot run now (node at its limit, suspended, outside its
# window) says so with this; DEFERRED_SOON ones are worth retrying in seconds,
# the others wait for the reconciler (their items carry a not_before).
DEFERRED = "deferred:"
DEFERRED_SOON = "deferred: soon:"
RETRY_DEFERRED_SECONDS = 2
# A chunk brings its job's counters up to date at most this often (live progress).
_COUNTERS_EVERY = 1.0
# A retrieval token due within this many seconds is waited for in the chunk.
_SHORT_WAIT = 5.0
# Between rows, the job's state and its node's (an operator may suspend the node
# or change its window while a chunk runs) are read again at most this often;
# during a transfer the StallGuard watches them.
_STATE_EVERY = 0.25
# A chunk going on with its job: see RowBatches.
_BATCH_SECONDS = 0.1
_BATCH_MAX = 20
# About what a batch's claim and look at the project cost a worker (RowBatches).
_CLAIM_SECONDS = 0.002


def node_peer(node: PacsNode) -> Peer:
    return Peer(
        host=node.host,
        port=node.port,
        called_ae=node.ae_title,
        calling_ae=node.effective_calling_ae(),
        connect_timeout=node.connect_timeout,
        acse_timeout=node.acse_timeout,
        dimse_timeout=node.dimse_timeout,
        network_timeout=node.network_timeout,
    )


def sessions_prepare() -> int:
    """Encode the association requests of every active node in this process now
    (a worker does it when it starts), not in the first job's time."""
    count = 0
    for node in PacsNode.objects.filter(is_active=True).exclude(protocol=Protocol.DICOMWEB):
        for work in HANDLERS.values():
            association_request_prepare(node_peer(node), work.services)
            count += 1
    return count


def _date(value: str) -> dt.date | None:
    try:
        return dt.datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        return None


def _split_date_range(value: str) -> tuple[str, str] | None:
    """Two halves of a StudyDate range longer than a day, or None."""
    if "-" not in value:
        return None
    start, end = value.split("-", 1)
    first = _date(start) if start else dt.date(1900, 1, 1)
    last = _date(end) if end else dt.date.today()
    if first is None or last is None or last <= first:
        return None
    middle = first + (last - first) // 2
    return (
        f"{first:%Y%m%d}-{middle:%Y%m%d}",
        f"{middle + dt.timedelta(days=1):%Y%m%d}-{last:%Y%m%d}",
    )


def _find_capped(
    session: Session, row: dict[str, str], *, model: str, cap: int, character_set: str
) -> tuple[list[Dataset], bool]:
    """C-FIND one row; a row that hits the node's result cap and has a StudyDate
    range is split in halves (on the same association) until each part is under
    the cap. Returns the matches and whether some may still be missing."""
    identifier = identifier_from_row(row, character_set=character_set)
    matches = list(session.find(identifier, model=model))
    if not cap or len(matches) < cap:
        return matches, False
    halves = _split_date_range(row.get("StudyDate", ""))
    if halves is None:
        return matches, True
    merged: dict[tuple[str, ...], Dataset] = {}
    truncated = False
    for half in halves:
        part, part_truncated = _find_capped(
            session, {**row, "StudyDate": half}, model=model, cap=cap, character_set=character_set
        )
        truncated = truncated or part_truncated
        for match in part:
            key = tuple(
                str(match.get(k, ""))
                for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID")
            )
            merged[key] = match
    return list(merged.values()), truncated


def _find_one(session: Session, job: Job, item: JobItem) -> item_life.Outcome:
    node = job.node
    matches, truncated = _find_capped(
        session, find_row(item.identifier, omitted=node.omitted_return_keys()),
        model=node.query_model, cap=node.result_cap,
        character_set=node.character_set,
    )  # fmt: skip
    rows = []
    for match in matches:
        attrs = match_to_dict(match)
        rows.append(
            FindResult(
                job=job,
                item=item,
                attributes=attrs,
                patient_id=attrs.get("PatientID", "")[:64],
                study_instance_uid=attrs.get("StudyInstanceUID", "")[:64],
                series_instance_uid=attrs.get("SeriesInstanceUID", "")[:64],
                accession_number=attrs.get("AccessionNumber", "")[:64],
                study_date=_date(attrs.get("StudyDate", "")),
                modality=(attrs.get("Modality") or attrs.get("ModalitiesInStudy", ""))[:64],
                study_description=attrs.get("StudyDescription", "")[:256],
                series_description=attrs.get("SeriesDescription", "")[:256],
            )
        )

    def save() -> None:
        # A retried item replaces what an earlier, interrupted attempt stored.
        FindResult.objects.filter(item=item).delete()
        FindResult.objects.bulk_create(rows, batch_size=500)

    return item_life.Outcome({"matches": len(rows), "possibly_truncated": truncated}, save)


def _nothing_to_prepare(session: Session, job: Job, items: list[JobItem], *, first: bool) -> None:
    return None


@dataclass(frozen=True)
class RowWork:
    """How the rows of one kind of job are worked."""

    services: tuple[str, ...]  # proposed on the chunk's association
    handler: Callable[[Session, Job, JobItem], item_life.Outcome | item_life.Pending]
    action: AuditAction  # of each row's audit event
    # Called with the rows a chunk has taken, before they are worked (``first``:
    # the first rows of the association).
    prepare: Callable[..., None] = _nothing_to_prepare


HANDLERS: dict[str, RowWork] = {
    JobKind.FIND: RowWork(("find",), _find_one, AuditAction.FIND),
    JobKind.MOVE: RowWork(("find", "move"), retrieve_item, AuditAction.MOVE, prepare_rows),
    JobKind.GET: RowWork(("find", "get"), retrieve_item, AuditAction.GET, prepare_rows),
}


def _access_refusal(job: Job) -> str:
    from pulls import selectors
    from pulls.models import Role

    owner = job.owner
    if not owner.is_active:
        return f"the job's owner {owner.get_username()} is no longer active"
    if not selectors.node_list_for_user(user=owner).filter(pk=job.node_id).exists():
        return f"the node {job.node.name} is no longer granted to {owner.get_username()}"
    role = selectors.project_role_for(user=owner, project=job.project)
    if role not in (Role.OWNER, Role.MEMBER):
        return f"{owner.get_username()} may no longer run jobs in {job.project.name}"
    return ""


def run_chunk(item_ids: list[int]) -> str:
    token, claimed = item_life.items_claim(item_ids, worker=socket.gethostname())
    if not claimed:
        return "nothing to do"
    job = Job.objects.select_related("node", "project", "owner").get(pk=claimed[0].job_id)
    refusal = _access_refusal(job)
    if refusal:
        # Access is checked again here, not only when the job was created: a
        # grant or membership withdrawn since then stops the job's traffic.
        for item in claimed:
            item_life.item_fail(item, token, message=refusal, retryable=False)
        item_life.job_refresh_counters(job.pk)
        return f"job {job.pk}: {refusal}"
    if job.node.suspended:
        return _defer(job, token, claimed, _suspended(job.node))
    closed = _window_closed(job.node)
    if closed is not None:
        return _defer(job, token, claimed, closed[0], not_before=closed[1])
    slot = throttle.association_slot(
        job.node, ttl=item_life.lease_seconds(), interactive=job.queue == QUEUE_INTERACTIVE
    )
    if slot is None:
        return _defer(
            job,
            token,
            claimed,
            f"waiting: throttled: node {job.node.name} allows {job.node.max_associations} "
            f"concurrent {'requests' if job.node.is_dicomweb else 'associations'} and all are "
            "in use",
            soon=True,
        )
    if job.waiting_reason:  # a write (on SQLite, the lock) only when there is one to clear
        Job.objects.filter(pk=job.pk).exclude(waiting_reason="").filter(
            status__in=(JobStatus.QUEUED, JobStatus.RUNNING)
        ).update(waiting_reason="")
    try:
        return _work(job, token, claimed, slot)
    finally:
        slot.release()


def _query_token(job: Job) -> None:
    """The node's queries per minute, shared by every worker; the job says it waits."""
    node = job.node

    def waiting(seconds: float) -> None:
        if seconds >= 0.2:  # worth telling: the job is held back by the limit
            Job.objects.filter(pk=job.pk, waiting_reason="").update(
                waiting_reason=f"throttled: {node.name} allows {node.queries_per_minute} "
                "queries per minute"
            )

    throttle.wait_for_query_token(node, on_wait=waiting)


def _suspended(node: PacsNode) -> str:
    return f"waiting: node {node.name} is suspended by an operator"


def _held(job: Job) -> tuple[str, dt.datetime | None] | None:
    """Why (and until when) the next row must not go to the node now, if so."""
    if job.node.suspended:
        return _suspended(job.node), None
    held = _window_closed(job.node)
    if held is None and job.kind != JobKind.FIND:
        held = _retrieval_wait(job)
    return held


def _window_closed(node: PacsNode) -> tuple[str, dt.datetime] | None:
    """Why and until when the node's allowed windows hold its traffic back."""
    windows = node.windows
    if windows_lib.window_open(windows):
        return None
    opening = windows_lib.window_next_opening(windows)
    return f"waiting for the window at {windows_lib.window_describe(opening)}", opening


def _retrieval_wait(job: Job) -> tuple[str, dt.datetime] | None:
    """Take one of the node's retrievals per hour, waiting for it if it is due
    soon; else why and until when the item must wait."""
    node = job.node
    token = throttle.retrieval_token(node, horizon=_SHORT_WAIT)
    if token.taken:
        if token.wait > 0:
            time.sleep(token.wait)
        return None
    until = timezone.now() + dt.timedelta(seconds=token.wait)
    return (
        f"waiting: throttled: {node.name} allows {node.retrievals_per_hour} retrievals per "
        f"hour; next at {windows_lib.window_describe(until)}",
        until,
    )


def _defer(
    job: Job,
    token,
    claimed: list[JobItem],
    waiting: str,
    *,
    soon: bool = False,
    not_before: dt.datetime | None = None,
) -> str:
    """Give the items back untouched (no attempt used) and say why the job waits.
    ``soon``: the task sends them again in seconds (tasks.run_items)."""
    for item in claimed:
        item_life.item_release(item, token, not_before=not_before, requeued=soon)
    Job.objects.filter(pk=job.pk).update(waiting_reason=waiting[:300])
    item_life.job_refresh_counters(job.pk)
    return f"{DEFERRED_SOON if soon else DEFERRED} job {job.pk}: {waiting}"


class RowBatches:
    """How many of its job's next rows a chunk takes at a time (``_more_rows``).

    The chunk's own rows (its message's) are the first batch; between two
    batches, a bulk chunk lets interactive work have the node (rows taken are
    worked before the slot goes). While a batch takes less than half of
    ``_BATCH_SECONDS``, the next is twice as big, up to ``_BATCH_MAX``; one
    that takes longer than ``_BATCH_SECONDS`` brings it back to a chunk's
    worth. Each batch costs a claim, a look at what the project holds of its
    studies and a refresh of the association's classes, ~2 ms of the
    worker's time (traced, 104 one-instance studies on Orthanc: 6 or 7
    batches a worker, a quarter of its task's time). Interactive
    work then waits for at most ``_BATCH_MAX`` rows instead of a chunk's
    worth, rows that went fast (a batch of fast rows followed by slow studies
    is the worst case). Batches of 40 were no faster on the real-archive
    corpus, whose few big studies then made one worker's last batch long.
    """

    def __init__(self, job: Job, started: float, rows: int) -> None:
        self.chunk = self.size = queueing.chunk_size(job)
        self.largest = max(_BATCH_MAX, self.chunk)
        self.taken_at = started  # when the chunk's own rows were taken
        self.rows = rows  # how many the last batch had
        self.per_row = _BATCH_SECONDS  # seconds a row of the last batch took

    @property
    def whole_below(self) -> int:
        """The job's last rows, fewer than this, are taken together
        (items_claim_next) where rows take less time than a claim."""
        return self.chunk if self.per_row < _CLAIM_SECONDS else 0

    def next_size(self) -> int:
        now = time.monotonic()
        took = now - self.taken_at
        self.per_row = took / max(self.rows, 1)
        if took < _BATCH_SECONDS / 2:
            self.size = min(self.size * 2, self.largest)
        elif took > _BATCH_SECONDS:
            self.size = self.chunk
        self.taken_at = now
        return self.size

    def taken(self, rows: int) -> None:
        self.rows = rows


def _more_rows(
    job: Job,
    token,
    rows: list[JobItem],
    *,
    since: float,
    finisher: RowFinisher,
    batches: RowBatches,
) -> bool:
    """Add the job's next queued rows to ``rows`` (a chunk that has worked its
    own: one association set-up instead of one per chunk), ``batches``' next
    size of them, unless the chunk has had its turn
    (PACSNPULL_TURN_SECONDS; then it lets its slot go, so that other jobs get
    theirs) or interactive work waits for the node; whether there are any.
    Fewer than a chunk's worth means the job's rows are running out: the
    ``finisher`` then writes each row as it is finished (RowFinisher.hurry)."""
    if time.monotonic() - since > settings.PACSNPULL_TURN_SECONDS:
        return False
    if job.queue != QUEUE_INTERACTIVE and throttle.interactive_waiting(job.node):
        return False
    chunk = queueing.chunk_size(job)
    limit = batches.next_size()
    taken = item_life.items_claim_next(
        job.pk, token=token, worker=socket.gethostname(), limit=limit,
        whole_below=batches.whole_below,
    )  # fmt: skip
    batches.taken(len(taken))
    if len(taken) < chunk:
        finisher.hurry()
    rows += taken
    return bool(rows)


def _session(
    job: Job, services: tuple[str, ...], writer, claimed: list[JobItem]
) -> Session | WebSession:
    """The chunk's association with the job's node, or its DICOMweb session:
    either works the same rows the same way (pulls.dicomweb.session)."""
    if job.node.is_dicomweb:
        return WebSession(job.node, before_query=lambda: _query_token(job))
    return Session(
        node_peer(job.node),
        services=services,
        writer=writer,
        before_query=lambda: _query_token(job),
        # C-GET: what the PACS named of these rows' studies, to begin with
        # (retrieval.prepare_rows and retrieve_item propose more as needed).
        storage_classes=storage_classes_known(claimed) if writer else None,
    )


def _work(job: Job, token, claimed: list[JobItem], slot: throttle.Slot) -> str:
    work = HANDLERS[job.kind]
    services, handler, action, prepare = work.services, work.handler, work.action, work.prepare
    started = chunk_started = time.monotonic()
    renew_after = item_life.lease_seconds() * _RENEW_FRACTION
    failed = 0
    remaining = list(claimed)
    item_life.job_refresh_counters(job.pk)  # the job shows its rows as running
    counted = time.monotonic()
    # Each row's bookkeeping is done there while the next row's transfer goes on.
    finisher = RowFinisher(job, token, action)
    batches = RowBatches(job, started, len(claimed))
    writer = None
    try:
        try:
            # C-GET instances arrive on our association: straight into the project.
            web = job.node.is_dicomweb  # WADO-RS instances wait in the staging area
            writer = project_writer(job.project) if "get" in services and not web else None
            if writer is not None:  # writes a killed worker cut short (as the staging sweep)
                cutoff = time.time() - settings.PACSNPULL_QUARANTINE_AFTER_SECONDS
                remove_cut_writes(writer.incoming, older_than=cutoff)
            with _session(job, services, writer, claimed) as session:
                state_read = -_STATE_EVERY
                prepared: set[int] = set()
                while remaining or _more_rows(
                    job, token, remaining, since=chunk_started, finisher=finisher, batches=batches
                ):
                    if finisher.disk_full:
                        break  # the job is paused (see RowFinisher)
                    if time.monotonic() - state_read >= _STATE_EVERY:
                        status, job.node.suspended, job.node.allowed_windows = (
                            Job.objects.filter(pk=job.pk)
                            .values_list("status", "node__suspended", "node__allowed_windows")
                            .get()
                        )
                        state_read = time.monotonic()
                        if status in (JobStatus.CANCELLED, JobStatus.PAUSED):
                            break
                    held = _held(job)
                    if held is not None:
                        _defer(job, token, remaining, held[0], not_before=held[1])
                        remaining = []
                        break
                    if remaining[0].pk not in prepared:
                        # Rows just taken, about to be worked (the node may be sent to).
                        prepare(session, job, remaining, first=not prepared)
                        prepared.update(row.pk for row in remaining)
                    item = remaining.pop(0)
                    if time.monotonic() - started > renew_after:
                        item_life.lease_renew(token)
                        slot.renew()
                        started = time.monotonic()
                    try:
                        result = handler(session, job, item)
                    except JobStopped as exc:
                        # Cancelled, paused or suspended mid-transfer: the C-CANCEL went
                        # out and what had arrived is placed; the item waits (paused,
                        # suspended) or ends (cancelled).
                        if exc.status == SUSPENDED:
                            _defer(job, token, [item, *remaining], _suspended(job.node))
                            remaining = []
                        elif exc.status == JobStatus.PAUSED:
                            item_life.item_release(item, token)
                        else:
                            item_life.item_cancel(item, token, **exc.counts)
                        break
                    except DiskFull as exc:
                        pause_for_disk(job, item, token, exc)
                        break
                    except IdentifierError as exc:
                        item_life.item_fail(item, token, message=str(exc), retryable=False)
                        failed += 1
                        continue
                    except PacsError as exc:
                        record_failure(job, item, token, action, exc)
                        failed += 1
                        if session.conn is None:  # the association is gone: stop this chunk
                            raise
                        continue
                    finisher.submit(item, result)
                    if time.monotonic() - counted > _COUNTERS_EVERY:
                        # Live progress: the job's counters move while the chunk works.
                        finisher.refresh_counters()
                        counted = time.monotonic()
        finally:
            try:
                if writer is not None:
                    # Instances of rows not worked (fetched in a list with a row
                    # that was): in the project, so recorded; their rows find them.
                    record_unworked(job, writer)
            finally:
                finisher.close()  # whatever the recording met: the rows finished are written
    except PacsError as exc:
        # The association failed: every item not yet worked on waits for a retry.
        for item in remaining:
            item_life.item_fail(item, token, message=str(exc), retryable=exc.retryable)
        remaining = []  # recorded: nothing left to cancel or release below
        log.warning("job %s: association with node %s failed: %s", job.pk, job.node_id, exc)
    # Items of a job cancelled meanwhile are cancelled; of a paused job, they wait
    # (the attempt was not used) until it is resumed.
    paused = Job.objects.filter(pk=job.pk, status=JobStatus.PAUSED).exists()
    for item in remaining:
        if paused:
            item_life.item_release(item, token)
        else:
            item_life.item_cancel(item, token)
    # Items set back to pending for a retry are queued again by the reconciler
    # once their not_before has passed.
    item_life.job_refresh_counters(job.pk)
    failed += finisher.failed
    return (
        f"job {job.pk}: {finisher.done} done, {failed} failed or retrying, "
        f"{len(remaining)} deferred"
    )
