"""Celery tasks: thin, take ids, call a service, return a short status string."""

from __future__ import annotations

from celery import shared_task

from pulls import items, quarantine, runner


def enqueue_items(item_ids: list[int]) -> None:
    run_items.delay(item_ids)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_items(item_ids: list[int]) -> str:
    message = runner.run_chunk(item_ids)
    if message.startswith(runner.DEFERRED) and "throttled" in message:
        # A slot frees up soon: try again shortly (a suspended node waits for
        # the reconciler instead).
        run_items.apply_async((item_ids,), countdown=runner.RETRY_DEFERRED_SECONDS)
    return message


@shared_task(acks_late=True)
def reconcile() -> str:
    counts = items.items_reconcile(enqueue=enqueue_items)
    swept = quarantine.staging_sweep()
    return ", ".join(f"{k} {v}" for k, v in {**counts, **swept}.items())
