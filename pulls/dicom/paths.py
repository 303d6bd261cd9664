"""File names from tag values: an attack surface, so only safe UIDs pass as they are."""

from __future__ import annotations

import hashlib
import re

_SAFE_UID = re.compile(r"^[0-9.]{1,64}$")


def safe_component(value: str) -> str:
    """A UID that matches ``^[0-9.]{1,64}$`` (and is not '.' or '..') is used as is;
    anything else becomes a fixed-length hash, so ``../`` or ``/`` never reach a path."""
    if _SAFE_UID.match(value) and value.strip(".") != "":
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f"x{digest}"
