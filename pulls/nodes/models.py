"""PACS nodes: where finds and retrievals go, how (DIMSE or DICOMweb), and
the limits that protect them. Loaded and re-exported by ``pulls.models``."""

from __future__ import annotations

import re
import uuid
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from pydicom.datadict import tag_for_keyword

from pulls.dicom.identifiers import DEFAULT_QUERY_CHARACTER_SET, QUERY_CHARACTER_SETS
from pulls.limits.windows import Window, windows_parse, windows_validator

# PS3.5 6.2: at most 16 characters, no backslash or control characters.
ae_title_validator = RegexValidator(
    r"^[\x20-\x5b\x5d-\x7e]{1,16}$",
    "An AE title has 1 to 16 printable ASCII characters and no backslash.",
)


def return_keys_validator(value: str) -> None:
    """Every word a DICOM keyword (the node's return keys left out)."""
    unknown = [k for k in re.split(r"[\s,]+", value.strip()) if k and tag_for_keyword(k) is None]
    if unknown:
        raise ValidationError(
            f"{', '.join(unknown)}: not DICOM keywords (check spelling and case, such as "
            "ModalitiesInStudy)"
        )


class WebAddressField(models.URLField):
    """A URL field whose forms take an address typed without a scheme as https://
    (as Django 6 will for every URL field)."""

    def formfield(self, **kwargs):
        kwargs.setdefault("assume_scheme", "https")
        return super().formfield(**kwargs)


class QueryModel(models.TextChoices):
    STUDY_ROOT = "S", "Study Root"
    PATIENT_ROOT = "P", "Patient Root"


class RetrieveMethod(models.TextChoices):
    MOVE = "move", "C-MOVE"
    GET = "get", "C-GET"


class Protocol(models.TextChoices):
    DIMSE = "dimse", "DIMSE (C-FIND, C-MOVE, C-GET)"
    DICOMWEB = "dicomweb", "DICOMweb (QIDO-RS, WADO-RS, STOW-RS)"


class WebAuth(models.TextChoices):
    NONE = "none", "None"
    BASIC = "basic", "Basic (user name and password)"
    BEARER = "bearer", "Bearer token"


# An environment variable's name (the node's DICOMweb secret read from it).
env_name_validator = RegexValidator(
    r"^[A-Za-z_][A-Za-z0-9_]*$",
    "An environment variable's name: letters, digits and underscores, not starting with a digit.",
)
url_prefix_validator = RegexValidator(
    r"^[A-Za-z0-9._~/-]*$", "A path prefix such as qido or rs/qido: letters, digits, - _ . ~ and /."
)


class PacsNode(models.Model):
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=64, unique=True, help_text="Short name shown to users.")
    protocol = models.CharField(
        max_length=8,
        choices=Protocol.choices,
        default=Protocol.DIMSE,
        help_text="DIMSE: AE title, host and port. DICOMweb: the base URL (finds by QIDO-RS, "
        "retrievals by WADO-RS, sending by STOW-RS); host and port are taken from it.",
    )
    ae_title = models.CharField(
        "called AE title", max_length=16, blank=True, validators=[ae_title_validator]
    )
    host = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(65535)], null=True, blank=True
    )
    # DICOMweb (protocol DICOMWEB).
    base_url = WebAddressField(
        "DICOMweb base URL",
        max_length=500,
        blank=True,
        help_text="E.g. https://pacs.example.org/dicom-web (studies are under it).",
    )
    qido_prefix = models.CharField(
        "QIDO-RS path", max_length=100, blank=True, validators=[url_prefix_validator],
        help_text="Path under the base URL for searches, if the server has one (e.g. qido).",
    )  # fmt: skip
    wado_prefix = models.CharField(
        "WADO-RS path", max_length=100, blank=True, validators=[url_prefix_validator],
        help_text="Path under the base URL for retrievals, if the server has one (e.g. wado).",
    )  # fmt: skip
    stow_prefix = models.CharField(
        "STOW-RS path", max_length=100, blank=True, validators=[url_prefix_validator],
        help_text="Path under the base URL for storing, if the server has one (e.g. stow).",
    )  # fmt: skip
    web_auth = models.CharField(
        "authentication", max_length=8, choices=WebAuth.choices, default=WebAuth.NONE
    )
    web_username = models.CharField("user name", max_length=150, blank=True)
    # Fernet token (pulls.dicomweb.credentials); never shown, never in the audit log.
    web_secret = models.TextField("password or token (encrypted)", blank=True, editable=False)
    web_secret_env = models.CharField(
        "password or token from the environment variable",
        max_length=100,
        blank=True,
        validators=[env_name_validator],
        help_text="The name of an environment variable of the portal and its workers that "
        "holds the password or token; it takes precedence over a stored one.",
    )
    web_ca_bundle = models.CharField(
        "CA bundle",
        max_length=500,
        blank=True,
        help_text="A file of CA certificates to trust for this server (a hospital's own CA); "
        "blank: the system's.",
    )
    calling_ae_title = models.CharField(
        max_length=16,
        blank=True,
        validators=[ae_title_validator],
        help_text="Our AE title towards this node; blank uses the portal's own.",
    )
    move_destination = models.CharField(
        max_length=16,
        blank=True,
        validators=[ae_title_validator],
        help_text="AE title the PACS sends C-MOVE results to; blank uses the portal's own. "
        "The PACS must know it with the portal's host and storage port.",
    )
    query_model = models.CharField(
        max_length=1, choices=QueryModel.choices, default=QueryModel.STUDY_ROOT
    )
    retrieve_method = models.CharField(
        max_length=4, choices=RetrieveMethod.choices, default=RetrieveMethod.MOVE
    )
    # Timeouts in seconds.
    connect_timeout = models.PositiveIntegerField(default=10, help_text="TCP connect.")
    acse_timeout = models.PositiveIntegerField(
        default=30, help_text="Answer to the association request."
    )
    dimse_timeout = models.PositiveIntegerField(
        default=60, help_text="Answer to a C-ECHO, and each C-FIND response."
    )
    network_timeout = models.PositiveIntegerField(
        default=120,
        help_text="Longest silence between the sub-operations of a C-MOVE or C-GET.",
    )
    # Limits: how hard the portal, all workers together, may hit this node.
    max_associations = models.PositiveIntegerField(
        default=2,
        validators=[MinValueValidator(1)],
        help_text="Concurrent associations (DICOMweb: concurrent requests).",
    )
    queries_per_minute = models.PositiveIntegerField(
        default=120, help_text="C-FIND (QIDO-RS) requests per minute; 0 means no limit."
    )
    retrievals_per_hour = models.PositiveIntegerField(
        default=0, help_text="C-MOVE/C-GET (WADO-RS) requests per hour; 0 means no limit."
    )
    stall_limit = models.PositiveIntegerField(
        default=10,
        help_text="Cancel a C-MOVE after this many pending responses without progress.",
    )
    result_cap = models.PositiveIntegerField(
        default=0,
        help_text="Most matches the PACS returns for one query; 0 if it has no cap.",
    )
    allowed_windows = models.CharField(
        max_length=300,
        blank=True,
        validators=[windows_validator],
        help_text="When the portal may send anything, in the portal's time zone, e.g. "
        "'Mon-Fri 19:00-07:00; Sat-Sun' (a range past midnight ends the next day). "
        "Blank: any time.",
    )
    character_set = models.CharField(
        "query character set",
        max_length=16,
        choices=list(QUERY_CHARACTER_SETS.items()),
        default=DEFAULT_QUERY_CHARACTER_SET,
        blank=True,
        help_text="How query values beyond ASCII (names with accents, other scripts) are sent "
        "(SpecificCharacterSet). UTF-8 where the PACS reads it; answers are decoded in "
        "whatever set the PACS names.",
    )
    return_keys_omitted = models.CharField(
        "return keys left out",
        max_length=500,
        blank=True,
        validators=[return_keys_validator],
        help_text="DICOM keywords, separated by spaces or commas, that finds on this node do "
        "not ask back (for a PACS that is slow on some key, e.g. ModalitiesInStudy). The "
        "unique keys and the instance counts are always asked.",
    )
    is_destination = models.BooleanField(
        "destination",
        default=False,
        help_text="Files may be sent to this node by C-STORE, or STOW-RS for a DICOMweb node "
        "(a research PACS, XNAT's DICOM receiver, an Orthanc): users it is granted to "
        "choose it under Send to.",
    )
    suspended = models.BooleanField(
        default=False, help_text="Stops all traffic to this node at once."
    )
    is_active = models.BooleanField(default=True)
    granted_users = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="granted_nodes"
    )
    granted_groups = models.ManyToManyField(Group, blank=True, related_name="granted_nodes")
    last_echo_at = models.DateTimeField(null=True, blank=True)
    last_echo_ok = models.BooleanField(null=True, blank=True)
    last_echo_message = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "PACS node"

    def __str__(self) -> str:
        if self.is_dicomweb:
            return f"{self.name} ({self.base_url})"
        return f"{self.name} ({self.ae_title}@{self.host}:{self.port})"

    def save(self, *args, **kwargs) -> None:
        if self.is_dicomweb and self.base_url:
            # Host and port as the URL names them (shown, and used by the limits' keys).
            parts = urlsplit(self.base_url)
            self.host = parts.hostname or ""
            self.port = parts.port or (443 if parts.scheme == "https" else 80)
        super().save(*args, **kwargs)

    def clean(self) -> None:
        super().clean()
        if self.is_dicomweb:
            if not self.base_url:
                raise ValidationError({"base_url": "A DICOMweb node needs its base URL."})
            parts = urlsplit(self.base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValidationError(
                    {"base_url": "Give an http:// or https:// URL, such as "
                     "https://pacs.example.org/dicom-web."}
                )  # fmt: skip
            if self.web_auth == WebAuth.BASIC and not self.web_username:
                raise ValidationError({"web_username": "Basic authentication needs a user name."})
            return
        missing = {
            field: f"A DIMSE node needs its {label}."
            for field, label in (("ae_title", "AE title"), ("host", "host"), ("port", "port"))
            if not getattr(self, field)
        }
        if missing:
            raise ValidationError(missing)

    @property
    def is_dicomweb(self) -> bool:
        return self.protocol == Protocol.DICOMWEB

    @property
    def windows(self) -> list[Window]:
        return windows_parse(self.allowed_windows)

    def omitted_return_keys(self) -> set[str]:
        return set(re.split(r"[\s,]+", self.return_keys_omitted.strip())) - {""}

    def effective_calling_ae(self) -> str:
        return self.calling_ae_title or settings.PACSNPULL_AE_TITLE

    def effective_move_destination(self) -> str:
        return self.move_destination or settings.PACSNPULL_AE_TITLE
