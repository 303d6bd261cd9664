"""A project's pseudonyms, UIDs and date shifts, derived from its secret.

Every replacement value is a keyed hash (HMAC-SHA256) of the original under the
project's secret, so the same patient, study or instance gets the same
replacement in every job, every worker and every run without a lookup, and
nobody without the secret can recompute or reverse one (a PatientID space is
small: a plain hash of it could be brute-forced). Each kind of value is hashed
with a label of its own, so a PatientID and a UID that happen to be equal get
unrelated replacements.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

# Known DICOM UIDs (SOP classes, transfer syntaxes, coding schemes...) identify
# no one and must stay as they are for a file to be read.
STANDARD_UID_ROOT = "1.2.840.10008."
# Dates move back by a whole number of weeks (weekdays are kept) between one
# week and this many: far enough that no date can be guessed from the shifted one.
MAX_SHIFT_WEEKS = 520


class Keys:
    """The replacements of one project (``secret``: its key, bytes).

    ``given`` maps original PatientIDs to pseudonyms a query file gave; the
    others are derived. Values are cached: a study's instances repeat them.
    """

    def __init__(self, secret: bytes, *, given: Mapping[str, str] | None = None) -> None:
        self._secret = secret
        self.given = dict(given or {})
        self._uids: dict[str, str] = {}

    def _digest(self, label: str, value: str) -> bytes:
        message = label.encode("ascii") + b"\x00" + value.encode("utf-8", "surrogateescape")
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def patient_id(self, original: str) -> str:
        """The PatientID's pseudonym: the one given, else ``P`` and 16 letters or digits."""
        given = self.given.get(original)
        if given:
            return given
        return "P" + _base32(self._digest("PatientID", original))[:16]

    def patient_name(self, original_id: str) -> str:
        """The PatientName that goes with the pseudonym (a name tells nothing more)."""
        return self.patient_id(original_id)

    def accession(self, original: str) -> str:
        """An AccessionNumber (SH: at most 16 characters)."""
        return "A" + _base32(self._digest("AccessionNumber", original))[:15]

    def study_id(self, original: str) -> str:
        return "S" + _base32(self._digest("StudyID", original))[:15]

    def uid(self, original: str) -> str:
        """A ``2.25.`` UID (PS3.5 B.2: a 128-bit integer) for any UID but the
        standard ones, the same for the same UID wherever it appears."""
        original = original.rstrip("\x00 ")
        if not original or original.startswith(STANDARD_UID_ROOT):
            return original
        found = self._uids.get(original)
        if found is None:
            number = int.from_bytes(self._digest("UID", original)[:16], "big")
            found = self._uids[original] = f"2.25.{number}"
        return found

    def shift_days(self, original_patient_id: str) -> int:
        """How many days this patient's dates move back: whole weeks, at least one."""
        weeks = 1 + int.from_bytes(self._digest("DateShift", original_patient_id)[:4], "big") % (
            MAX_SHIFT_WEEKS
        )
        return 7 * weeks

    def text(self, label: str, original: str, length: int) -> str:
        """A replacement for another identifying text (an ID, a name) of ``length``."""
        return _base32(self._digest(label, original))[:length]


def _base32(digest: bytes) -> str:
    return base64.b32encode(digest).decode("ascii").rstrip("=")
