"""Seed-compatible: `python manage.py echo --config CONF.json` (the prototype's `flask echo`)."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from pulls.cli.inline import database_ready, seed_config
from pulls.services import cli_setup, node_echo


class Command(BaseCommand):
    help = "C-ECHO the PACS of a prototype CONF.json."

    def add_arguments(self, parser):
        parser.add_argument("--config", type=Path, required=True, help="the prototype's CONF.json")
        parser.add_argument("--user", help="portal user to act as (default: 'cli')")

    def handle(self, *args, config: Path, user: str | None, **options):
        conf = seed_config(Path(config))
        database_ready(self.stderr.write)
        actor, _, node = cli_setup(config=conf, username=user)
        message = node_echo(node=node, user=actor)
        if node.suspended or not node.last_echo_ok:
            raise CommandError(message)
        self.stdout.write(self.style.SUCCESS(message))
