"""The e-mail to a job's owner when it ends."""

from __future__ import annotations

from django.conf import settings
from django.core.mail import send_mail

from pulls.models import Job, JobKind, JobStatus
from pulls.notifications.summary import job_summary

OUTCOMES = {
    JobStatus.DONE: "is done",
    JobStatus.FAILED: "ended with failed rows",
    JobStatus.CANCELLED: "was cancelled",
}


def wants_mail(job: Job) -> bool:
    owner = job.owner
    return bool(settings.EMAIL_HOST and owner.email and owner.email_when_jobs_end)


def job_mail(job: Job) -> tuple[str, str]:
    """Subject and text of the mail."""
    s = job_summary(job)
    name = job.title or f"{job.get_kind_display()} job"
    subject = f"pacsnpull: {name} {OUTCOMES.get(job.status, job.status)}"
    if job.kind == JobKind.FIND:
        found = f"{s['matches']} matches"
    else:
        found = f"{s['instances']} of {s['instances_expected']} instances"
    text = (
        f"Your job {name} in the project {s['project_name']} (node {s['node']}) "
        f"{OUTCOMES.get(job.status, job.status)}.\n\n"
        f"Rows: {s['rows']} ({s['done']} done, {s['failed']} failed, {s['cancelled']} cancelled)\n"
        f"Found: {found}\n\n"
        f"{s['url']}\n\n"
        "You get this mail because your account page says so; untick it there to stop.\n"
    )
    return subject, text


def send_job_mail(job: Job) -> bool:
    """Mail the owner (if they want it); True when a mail went."""
    if not wants_mail(job):
        return False
    subject, text = job_mail(job)
    send_mail(subject, text, settings.DEFAULT_FROM_EMAIL, [job.owner.email])
    return True
