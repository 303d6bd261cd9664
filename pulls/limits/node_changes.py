"""What follows an operator's change of a node's limits: rows held back until a
window opened or an hourly retrieval was due are looked at again at once (the
next chunk applies the new limits and, if they still hold, says until when)."""

from __future__ import annotations

from django.db.models.signals import post_save
from django.dispatch import receiver
from django.utils import timezone

from pulls.models import ACTIVE_JOB_STATUSES, ItemStatus, JobItem, PacsNode

_HOLDING = ("allowed_windows", "retrievals_per_hour", "suspended")


@receiver(post_save, sender=PacsNode, dispatch_uid="node_limits_release_held_rows")
def _release_held_rows(sender, instance: PacsNode, created: bool, raw=False, **kwargs) -> None:
    before = getattr(instance, "_audit_before", None)  # set by pulls.audit.changes
    if raw or created or before is None:
        return
    if all(before[field] == getattr(instance, field) for field in _HOLDING):
        return
    JobItem.objects.filter(
        job__node=instance,
        job__status__in=ACTIVE_JOB_STATUSES,
        status=ItemStatus.PENDING,
        not_before__gt=timezone.now(),
    ).update(not_before=None, queued_at=None)
