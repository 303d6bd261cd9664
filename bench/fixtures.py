"""What the benchmarks without a PACS start from: an empty instance folder with
a migrated database, and a user who owns a project and may use a node (the
node's address leads nowhere: nothing is sent to it)."""

from __future__ import annotations

import shutil
from pathlib import Path


def fresh_database(work: Path) -> None:
    """Delete ``work``, make its instance folder, set Django up and migrate
    (the settings take the folder from PACSNPULL_INSTANCE_DIR)."""
    shutil.rmtree(work, ignore_errors=True)
    (work / "instance").mkdir(parents=True)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def owner_project_node() -> tuple:
    """The user "bench", owner of the project "bench", granted the node BENCH."""
    from accounts.models import User
    from pulls.models import Membership, PacsNode, Project, Role

    owner = User.objects.create_user("bench", may_pull_identifiable=True)
    project = Project.objects.create(name="Bench", slug="bench", deidentification="identifiable")
    Membership.objects.create(project=project, user=owner, role=Role.OWNER)
    node = PacsNode.objects.create(name="BENCH", ae_title="PACS", host="127.0.0.1", port=104)
    node.granted_users.add(owner)
    return owner, project, node
