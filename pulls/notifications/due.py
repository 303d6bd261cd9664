"""Which ended jobs are to be told, claimed once (the reconciler queues them)."""

from __future__ import annotations

from collections.abc import Callable

from django.utils import timezone

from pulls.audit.events import audit_record
from pulls.models import AuditAction, Job, JobStatus
from pulls.notifications.mail import send_job_mail, wants_mail
from pulls.notifications.webhooks import delivery_create, overdue

ENDED = [JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED]


def jobs_due():
    """Ended jobs not told yet (searches, which people watch, are not told)."""
    return Job.objects.filter(status__in=ENDED, notified_at__isnull=True, is_search=False)


def notify(job_id: int, *, deliver: Callable[[int], None]) -> dict[str, int]:
    """Tell one ended job's end: claimed first (one mail, one delivery, ever),
    then the owner's mail and the webhook's delivery (``deliver(id)`` queues it)."""
    if not Job.objects.filter(pk=job_id, notified_at__isnull=True).update(
        notified_at=timezone.now()
    ):
        return {"mails": 0, "webhooks": 0}
    job = Job.objects.select_related("owner", "project", "node").get(pk=job_id)
    mails = webhooks = 0
    if wants_mail(job):
        try:
            mails = int(send_job_mail(job))
        except OSError as exc:  # the SMTP server: said in the audit log, not retried
            audit_record(
                action=AuditAction.NOTIFY, actor_label="system", job=job, success=False,
                target=f"e-mail to the owner of job {job.code}",
                message=f"could not send: {type(exc).__name__}: {exc}"[:500],
            )  # fmt: skip
        else:
            audit_record(
                action=AuditAction.NOTIFY, actor_label="system", job=job,
                target=f"e-mail to the owner of job {job.code}", details={"status": job.status},
            )  # fmt: skip
    delivery = delivery_create(job)
    if delivery is not None:
        deliver(delivery.pk)
        webhooks = 1
    return {"mails": mails, "webhooks": webhooks}


def queue_due(enqueue: Callable[[int], None], deliver: Callable[[int], None]) -> int:
    """Queue the jobs to tell (the reconciler): ``enqueue(job_id)``; and the
    webhook deliveries whose next try is long overdue: ``deliver(id)``."""
    due = list(jobs_due().values_list("pk", flat=True)[:200])
    for job_id in due:
        enqueue(job_id)
    lost = overdue()
    for delivery_id in lost:
        deliver(delivery_id)
    return len(due) + len(lost)
