"""First-run set-up: the operators group, and a first operator account if none exists."""

from django.conf import settings
from django.core.management.base import BaseCommand

from accounts.models import User
from accounts.services import operator_create, operators_group_sync


class Command(BaseCommand):
    help = "Create the operators group and, on first run, an operator account."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="operator")

    def handle(self, *args, username: str, **options):
        operators_group_sync()
        note = settings.INSTANCE_DIR / "first-login.txt"
        if not User.objects.exists():
            _, password = operator_create(username=username)
            note.write_text(f"username: {username}\npassword: {password}\n")
            note.chmod(0o600)
            self.stdout.write(
                self.style.SUCCESS(
                    "\nCreated the first operator account.\n"
                    f"  username: {username}\n  password: {password}\n"
                    f"(also in {note}; change it after logging in, then delete that file)\n"
                )
            )
        elif note.exists():
            self.stdout.write(f"\nFirst operator account: see {note}\n")
