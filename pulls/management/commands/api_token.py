"""`manage.py api_token USERNAME [--read-only] [--days N] [--name TEXT]`: a
personal API token for a user, printed once (operators and scripts)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from pulls.api.tokens import token_create


class Command(BaseCommand):
    help = "Make a personal API token for a user; it is printed once."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--read-only", action="store_true", help="a token that only reads")
        parser.add_argument("--days", type=int, default=None, help="days it lasts (default 90)")
        parser.add_argument("--name", default="made on the command line")

    def handle(self, *args, username, read_only, days, name, **options):
        user = User.objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(f"No active user {username!r}: check the name in the admin.")
        try:
            token, text = token_create(
                user=user, name=name, read_only=read_only, days=days, actor_label="command line"
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stderr.write(
            f"{token.get_scope_display()} token of {username}, until {token.expires_at:%Y-%m-%d}"
            " (shown this once):"
        )
        self.stdout.write(text)
