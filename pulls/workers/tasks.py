"""Celery tasks: thin, take ids, call a service, return a short status string.

Their names are kept as they were when this module was ``pulls.tasks``
(``TASK_NAMES``): messages queued by a portal of an earlier version are
worked by this one, and the settings route and schedule them by name."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from celery import shared_task
from celery.signals import task_postrun, task_prerun, worker_process_init
from django.db import close_old_connections, connections
from kombu.exceptions import KombuError

from pulls.delivery import deletion, nifti, sending
from pulls.jobs import items, queueing
from pulls.models import QUEUE_BULK, QUEUE_INTERACTIVE, Job, WebhookDelivery
from pulls.notifications import due, webhooks
from pulls.retrieval import quarantine
from pulls.workers import runner

log = logging.getLogger(__name__)


# Sent in a round trip of their own before the others: the workers start on
# the job's first rows while the rest are made (~0.25 ms a message: a
# 104-row C-GET job's 21 messages held its first for ~5 ms).
FIRST_CHUNKS = 2


def enqueue_chunks(chunks: Sequence[queueing.Chunk]) -> None:
    """A message per chunk, in two Redis round trips (kombu's publish batches;
    half the time of a message each, as kombu built a Redis client per
    message): the first FIRST_CHUNKS, then the others."""
    try:
        with run_items.app.producer_or_acquire() as producer:
            for part in (chunks[:FIRST_CHUNKS], chunks[FIRST_CHUNKS:]):
                if not part:
                    continue
                with producer.batch():
                    for chunk in part:
                        run_items.apply_async(
                            (chunk.ids,), queue=chunk.queue, priority=chunk.priority,
                            producer=producer,
                        )  # fmt: skip
    except KombuError as exc:  # kombu's retries are over (0.6 s)
        raise queueing.QueueUnreachable(str(exc)) from exc


def enqueue_rest(job_id: int, after_row: int) -> None:
    """The rest of a big job's chunks: sent by a worker, not the web request."""
    try:
        queue_rest.apply_async((job_id, after_row), queue=QUEUE_INTERACTIVE)
    except KombuError as exc:
        raise queueing.QueueUnreachable(str(exc)) from exc


# The names messages carry (see above).
TASK_NAMES = {
    "queue_rest": "pulls.tasks.queue_rest",
    "run_items": "pulls.tasks.run_items",
    "reconcile": "pulls.tasks.reconcile",
    "convert_nifti": "pulls.tasks.convert_nifti",
    "apply_retention": "pulls.tasks.apply_retention",
    "send_studies": "pulls.tasks.send_studies",
    "notify_job": "pulls.tasks.notify_job",
    "deliver_webhook": "pulls.tasks.deliver_webhook",
}


@shared_task(name=TASK_NAMES["queue_rest"], acks_late=True)
def queue_rest(job_id: int, after_row: int) -> str:
    sent = queueing.items_enqueue_after(job_id, after_row, enqueue=enqueue_chunks)
    return f"job {job_id}: {sent} more rows queued"


@shared_task(name=TASK_NAMES["run_items"], bind=True, acks_late=True, reject_on_worker_lost=True)
def run_items(self, item_ids: list[int]) -> str:
    message = runner.run_chunk(item_ids)
    if message.startswith(runner.DEFERRED_SOON):
        # An association slot frees up soon: try again shortly, on the same
        # queue. Longer waits (suspended, window, hourly limit) are the
        # reconciler's: the items carry their not_before.
        delivery = self.request.delivery_info or {}
        run_items.apply_async(
            (item_ids,),
            countdown=runner.RETRY_DEFERRED_SECONDS,
            queue=delivery.get("routing_key") or QUEUE_BULK,
            priority=delivery.get("priority"),
        )
    return message


@shared_task(name=TASK_NAMES["reconcile"], acks_late=True)
def reconcile() -> str:
    counts = items.items_reconcile(enqueue=enqueue_chunks)
    swept = quarantine.staging_sweep()
    swept["nifti_queued"] = nifti.queue_due(enqueue_conversion)
    swept["sendings_queued"] = sending.queue_due(enqueue_sending)
    swept["jobs_told"] = due.queue_due(enqueue_notify, enqueue_webhook)
    return ", ".join(f"{k} {v}" for k, v in {**counts, **swept}.items())


def enqueue_conversion(job_id: int) -> None:
    convert_nifti.apply_async((job_id,), queue=QUEUE_BULK)


@shared_task(name=TASK_NAMES["convert_nifti"], acks_late=True)
def convert_nifti(job_id: int) -> str:
    job = Job.objects.select_related("project").filter(pk=job_id).first()
    if job is None or job.nifti_converted_at is not None:
        return f"job {job_id}: nothing to convert"
    counts = nifti.convert_job(job)
    return f"job {job_id}: " + ", ".join(f"{k} {v}" for k, v in counts.items())


def enqueue_sending(sending_id: int, countdown: float = 0) -> None:
    """Queue a sending; a queue that cannot be reached loses nothing: the
    reconciler queues it again (sending.queue_due)."""
    try:
        send_studies.apply_async((sending_id,), queue=QUEUE_BULK, countdown=countdown)
    except KombuError:
        log.warning("could not queue sending %s: the reconciler will", sending_id)


@shared_task(name=TASK_NAMES["send_studies"], acks_late=True, reject_on_worker_lost=True)
def send_studies(sending_id: int) -> str:
    wait = sending.sending_run(sending_id)
    if wait is not None:  # a limit holds it back: look again later (at most 5 minutes)
        enqueue_sending(sending_id, countdown=min(wait.seconds, 300))
        return f"sending {sending_id}: {wait.reason}"
    return f"sending {sending_id}: ended"


def enqueue_notify(job_id: int) -> None:
    notify_job.apply_async((job_id,), queue=QUEUE_INTERACTIVE)


def enqueue_webhook(delivery_id: int, countdown: float = 0) -> None:
    deliver_webhook.apply_async((delivery_id,), queue=QUEUE_INTERACTIVE, countdown=countdown)


@shared_task(name=TASK_NAMES["notify_job"], acks_late=True)
def notify_job(job_id: int) -> str:
    counts = due.notify(job_id, deliver=enqueue_webhook)
    return f"job {job_id}: " + ", ".join(f"{k} {v}" for k, v in counts.items())


@shared_task(name=TASK_NAMES["deliver_webhook"], acks_late=True)
def deliver_webhook(delivery_id: int) -> str:
    delivery = WebhookDelivery.objects.filter(pk=delivery_id).first()
    if delivery is None:
        return f"webhook delivery {delivery_id}: gone"
    wait = webhooks.deliver(delivery)
    if wait is not None:
        enqueue_webhook(delivery_id, countdown=wait)
        return f"webhook delivery {delivery_id}: trying again in {wait:g} s"
    return f"webhook delivery {delivery_id}: over"


@shared_task(name=TASK_NAMES["apply_retention"], acks_late=True)
def apply_retention() -> str:
    counts = deletion.apply_retention()
    return ", ".join(f"{k} {v}" for k, v in counts.items())


@task_prerun.connect(dispatch_uid="pacsnpull_connections_before")
@task_postrun.connect(dispatch_uid="pacsnpull_connections_after")
def _close_old_connections(task=None, **kwargs) -> None:
    """A task's database connections are kept for the next one (CELERY_DB_REUSE_MAX)
    and closed as a request's are: past CONN_MAX_AGE, or unusable after an error
    (a database restarted). A new connection cost ~1 ms of CPU per task on
    SQLite, where a retrieval job's ten messages are ten tasks; a PostgreSQL
    server starts a process for each."""
    if task is None or not getattr(task.request, "is_eager", False):
        close_old_connections()


# How long a thread may hold the GIL while another waits for it (Python's
# default: 5 ms). A chunk's association is worked on the task's thread while
# the RowFinisher writes finished rows on its own: each time the transfer came
# back from the socket during a write, it could wait up to 5 ms for the GIL.
# At 0.5 ms, C-GET jobs of one-instance studies ran 2-5 % faster (22 pairs of
# jobs, alternated, bench/retrieve.py --corpus).
GIL_SWITCH_SECONDS = 0.0005


@worker_process_init.connect(dispatch_uid="pacsnpull_sessions_prepare")
def _prepare(**kwargs) -> None:
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    try:
        runner.sessions_prepare()
    except Exception:  # a cold start is slower, never broken
        log.warning("could not prepare the association requests", exc_info=True)
    finally:
        connections.close_all()
