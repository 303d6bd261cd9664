"""Typed readers for the environment variables that configure the portal.

Only ``portal/settings.py`` calls these, passing ``os.environ``. Each reader
raises ``ImproperlyConfigured`` naming the variable and the form it expects, so
a wrong value stops start-up with a message an operator can act on.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
# PS3.5 6.2: AE is at most 16 characters of the default repertoire, no backslash
# or control characters; leading/trailing spaces are not significant.
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


def _bad(name: str, value: str, expected: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{name}={value!r} is not valid: expected {expected}.")


class Env:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def is_set(self, name: str) -> bool:
        return bool(self.environ.get(name, "").strip())

    def str(self, name: str, default: str) -> str:
        value = self.environ.get(name, "").strip()
        return value or default

    def bool(self, name: str, default: bool) -> bool:
        raw = self.environ.get(name)
        if raw is None:
            return default
        value = raw.strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise _bad(name, raw, "one of true/false, 1/0, yes/no, on/off")

    def int(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        raw = self.environ.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise _bad(name, raw, f"a whole number from {minimum} to {maximum}") from None
        if not minimum <= value <= maximum:
            raise _bad(name, raw, f"a whole number from {minimum} to {maximum}")
        return value

    def port(self, name: str, default: int) -> int:
        return self.int(name, default, minimum=1, maximum=65535)

    def list(self, name: str, default: list[str]) -> list[str]:
        raw = self.environ.get(name, "").strip()
        if not raw:
            return default
        return [item.strip() for item in raw.split(",") if item.strip()]

    def path(self, name: str, default: Path) -> Path:
        raw = self.environ.get(name, "").strip()
        if not raw:
            return default
        path = Path(raw)
        if not path.is_absolute():
            raise _bad(name, raw, "an absolute path, such as /srv/pacsnpull/storage")
        return path

    def ae_title(self, name: str, default: str) -> str:
        raw = self.environ.get(name, "")
        value = raw.strip() or default
        if not _AE_TITLE.match(value):
            raise _bad(
                name,
                raw,
                "a DICOM AE title: 1 to 16 printable ASCII characters without backslash",
            )
        return value

    def url(self, name: str, default: str, *, schemes: tuple[str, ...]) -> str:
        raw = self.environ.get(name, "").strip()
        if not raw:
            return default
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not (parts.hostname or parts.path):
            forms = " or ".join(f"{s}://..." for s in schemes)
            raise _bad(name, raw, f"a URL of the form {forms}")
        return raw

    def timezone(self, name: str, default: str) -> str:
        value = self.str(name, default)
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise _bad(name, value, "an IANA time zone name such as Europe/Zurich") from None
        return value
