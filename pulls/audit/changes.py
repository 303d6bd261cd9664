"""Node, limit, grant, membership and project de-identification changes go
to the audit log, whichever code path makes them (the admin, a service, the
shell): model signals, with
the person taken from the request being served (pulls.audit.events.current_request).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save
from django.dispatch import receiver

from pulls.audit.events import audit_record
from pulls.models import AuditAction, Membership, PacsNode, Project

# Fields of a node whose changes are recorded (all but bookkeeping).
_NODE_SKIP = {"id", "code", "created_at", "updated_at", "last_echo_at", "last_echo_ok",
              "last_echo_message"}  # fmt: skip
_LIMITS = {"max_associations", "queries_per_minute", "retrievals_per_hour", "allowed_windows",
           "suspended", "stall_limit", "result_cap"}  # fmt: skip


def _node_fields() -> list[str]:
    return [f.attname for f in PacsNode._meta.concrete_fields if f.attname not in _NODE_SKIP]


@receiver(pre_save, sender=PacsNode, dispatch_uid="audit_node_before")
def _node_before(sender, instance: PacsNode, **kwargs) -> None:
    before = None
    if instance.pk:
        before = PacsNode.objects.filter(pk=instance.pk).values(*_node_fields()).first()
    instance._audit_before = before


@receiver(post_save, sender=PacsNode, dispatch_uid="audit_node_after")
def _node_after(sender, instance: PacsNode, created: bool, raw: bool = False, **kwargs) -> None:
    if raw:
        return
    before = getattr(instance, "_audit_before", None)
    if created or before is None:
        details = {"created": {f: _shown(f, getattr(instance, f)) for f in _node_fields()}}
        target = f"node {instance.name} created"
    else:
        changed = {
            f: [_shown(f, before[f]), _shown(f, getattr(instance, f))]
            for f in _node_fields()
            if before[f] != getattr(instance, f)
        }
        if not changed:
            return
        details = {"changed": changed}
        kinds = "limits" if set(changed) & _LIMITS else "settings"
        target = f"node {instance.name} {kinds} changed: {', '.join(sorted(changed))}"
    audit_record(action=AuditAction.NODE_CHANGED, node=instance, target=target, details=details)


# Recorded as changed, never with their values.
_SECRETS = {"web_secret"}


def _shown(field: str, value: Any) -> Any:
    if field in _SECRETS:
        return "(set)" if value else "(none)"
    return _plain(value)


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def _names(model, pks) -> list[str]:
    if model is Group:
        return sorted(Group.objects.filter(pk__in=pks).values_list("name", flat=True))
    user_model = get_user_model()
    return sorted(
        user_model.objects.filter(pk__in=pks).values_list(user_model.USERNAME_FIELD, flat=True)
    )


def _grant_changed(instance: PacsNode, field: str, action: str, model, pk_set) -> None:
    if action == "pre_clear":
        instance._audit_cleared = list(getattr(instance, field).values_list("pk", flat=True))
        return
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    pks = pk_set if action != "post_clear" else getattr(instance, "_audit_cleared", [])
    if not pks:
        return
    verb = "granted" if action == "post_add" else "withdrawn"
    names = _names(model, pks)
    who = "groups" if model is Group else "users"
    audit_record(
        action=AuditAction.PERMISSION_CHANGED,
        node=instance,
        target=f"node {instance.name} {verb} to {who} {', '.join(names)}"[:300],
        details={"node": instance.name, verb: {who: names}},
    )


@receiver(m2m_changed, sender=PacsNode.granted_users.through, dispatch_uid="audit_user_grant")
def _user_grant(sender, instance, action, reverse, model, pk_set, **kwargs) -> None:
    if reverse:  # user.granted_nodes.add(node): one event per node
        for node in PacsNode.objects.filter(pk__in=pk_set or []):
            _grant_changed(node, "granted_users", action, get_user_model(), {instance.pk})
        return
    _grant_changed(instance, "granted_users", action, model, pk_set)


@receiver(m2m_changed, sender=PacsNode.granted_groups.through, dispatch_uid="audit_group_grant")
def _group_grant(sender, instance, action, reverse, model, pk_set, **kwargs) -> None:
    if reverse:
        for node in PacsNode.objects.filter(pk__in=pk_set or []):
            _grant_changed(node, "granted_groups", action, Group, {instance.pk})
        return
    _grant_changed(instance, "granted_groups", action, model, pk_set)


@receiver(m2m_changed, sender=get_user_model().groups.through, dispatch_uid="audit_user_groups")
def _user_groups(sender, instance, action, reverse, model, pk_set, **kwargs) -> None:
    """A user's groups decide operator rights and group grants."""
    user_model = get_user_model()
    if action not in ("post_add", "post_remove"):
        return
    if reverse:  # group.user_set.add(user)
        users, groups = _names(user_model, pk_set), [instance.name]
    else:
        users, groups = [instance.get_username()], _names(Group, pk_set)
    verb = "added to" if action == "post_add" else "removed from"
    audit_record(
        action=AuditAction.PERMISSION_CHANGED,
        target=f"{', '.join(users)} {verb} group {', '.join(groups)}"[:300],
        details={"users": users, "groups": groups, "change": verb},
    )


@receiver(pre_save, sender=Membership, dispatch_uid="audit_membership_before")
def _membership_before(sender, instance: Membership, **kwargs) -> None:
    instance._audit_role = (
        Membership.objects.filter(pk=instance.pk).values_list("role", flat=True).first()
        if instance.pk
        else None
    )


@receiver(post_save, sender=Membership, dispatch_uid="audit_membership_after")
def _membership_after(sender, instance: Membership, created: bool, raw=False, **kwargs) -> None:
    if raw:
        return
    before = getattr(instance, "_audit_role", None)
    if not created and before == instance.role:
        return
    user = instance.user.get_username()
    if created or before is None:
        target = f"{user} joined {instance.project.name} as {instance.role}"
    else:
        target = f"{user} in {instance.project.name}: {before} -> {instance.role}"
    audit_record(
        action=AuditAction.PERMISSION_CHANGED,
        project=instance.project,
        target=target[:300],
        details={"user": user, "role": instance.role, "before": before},
    )


@receiver(post_delete, sender=Membership, dispatch_uid="audit_membership_gone")
def _membership_gone(sender, instance: Membership, **kwargs) -> None:
    user = instance.user.get_username()
    audit_record(
        action=AuditAction.PERMISSION_CHANGED,
        project=instance.project,
        target=f"{user} removed from {instance.project.name}"[:300],
        details={"user": user, "role": None, "before": instance.role},
    )


# A project's de-identification decides what enters its folder, its delivery
# settings who takes files out and how long they stay: its creation and every
# change of them are audited, whichever path makes them.
@receiver(pre_save, sender=Project, dispatch_uid="audit_project_before")
def _project_before(sender, instance: Project, **kwargs) -> None:
    fields = Project.AUDITED_FIELDS
    instance._audit_before = (
        Project.objects.filter(pk=instance.pk).values(*fields).first() if instance.pk else None
    )


@receiver(post_save, sender=Project, dispatch_uid="audit_project_after")
def _project_after(sender, instance: Project, created: bool, raw: bool = False, **kwargs) -> None:
    if raw:
        return
    now = {f: _plain(getattr(instance, f)) for f in Project.AUDITED_FIELDS}
    before = getattr(instance, "_audit_before", None)
    if created or before is None:
        target, details = (
            f"project {instance.name} created ({instance.deidentification})",
            {"created": now},
        )
    else:
        changed = {f: [before[f], v] for f, v in now.items() if before[f] != v}
        if not changed:
            return
        target = f"project {instance.name} settings changed: {', '.join(sorted(changed))}"
        details = {"changed": changed}
    audit_record(
        action=AuditAction.PROJECT_CHANGED, project=instance, target=target[:300], details=details
    )


@receiver(pre_save, sender=get_user_model(), dispatch_uid="audit_identifiable_before")
def _identifiable_before(sender, instance, **kwargs) -> None:
    instance._audit_identifiable = (
        sender.objects.filter(pk=instance.pk)
        .values_list("may_pull_identifiable", flat=True)
        .first()
        if instance.pk
        else None
    )


@receiver(post_save, sender=get_user_model(), dispatch_uid="audit_identifiable_after")
def _identifiable_after(sender, instance, created: bool, raw: bool = False, **kwargs) -> None:
    """The operators' grant to pull identifiable data, given or withdrawn."""
    before = getattr(instance, "_audit_identifiable", None)
    if raw or bool(before) == instance.may_pull_identifiable:
        return
    verb = "may" if instance.may_pull_identifiable else "may no longer"
    user = instance.get_username()
    audit_record(
        action=AuditAction.PERMISSION_CHANGED,
        target=f"{user} {verb} pull identifiable data"[:300],
        details={"user": user, "may_pull_identifiable": instance.may_pull_identifiable},
    )
