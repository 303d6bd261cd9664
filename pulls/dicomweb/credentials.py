"""A DICOMweb node's password or token: sealed in the database with a key
derived from the portal's SECRET_KEY (Fernet: AES-128-CBC with an HMAC), or
read from an environment variable of the portal and its workers, which takes
precedence. Never logged, never in the audit log, never shown again."""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

from pulls.dicom.errors import PacsError
from pulls.models import PacsNode


class CredentialError(PacsError):
    """The node's secret cannot be had here: an operator must set it."""

    retryable = False


def _fernet() -> Fernet:
    digest = hashlib.sha256(b"pacsnpull dicomweb node secret\x00" + settings.SECRET_KEY.encode())
    return Fernet(base64.urlsafe_b64encode(digest.digest()))


def secret_seal(plain: str) -> str:
    """The sealed form of a password or token, as ``PacsNode.web_secret`` keeps it."""
    return _fernet().encrypt(plain.encode("utf-8")).decode("ascii") if plain else ""


def node_secret(node: PacsNode) -> str:
    """The node's password or token: its environment variable's, else the sealed one."""
    if node.web_secret_env:
        value = os.environ.get(node.web_secret_env)
        if value is None:
            raise CredentialError(
                f"node {node.name} reads its DICOMweb secret from the environment variable "
                f"{node.web_secret_env}, which is not set for the portal's processes: set it "
                "in their environment (or store the secret in the node instead)"
            )
        return value
    if not node.web_secret:
        return ""
    try:
        return _fernet().decrypt(node.web_secret.encode("ascii")).decode("utf-8")
    except (InvalidToken, ValueError):
        raise CredentialError(
            f"node {node.name}'s stored DICOMweb secret cannot be opened (the portal's "
            "SECRET_KEY changed since it was stored): an operator must enter it again"
        ) from None
