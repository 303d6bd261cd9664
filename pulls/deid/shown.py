"""What a viewer of a pseudonymised project sees of a C-FIND match or a query row.

The PACS answers a find with the patients' real names and IDs; owners and
members, who ran it, see them. Viewers see each value as it is in the
project's files: the same profile (``profile``), the same pseudonyms, UIDs and
date shifts (``keys``), so what they read matches what they open.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from pydicom.datadict import dictionary_VR, tag_for_keyword

from pulls.deid.keys import Keys
from pulls.deid.profile import (
    ACCESSION,
    CLEAN,
    DUMMY,
    KEEP,
    PSEUDONYM,
    UID,
    Options,
    actions_for,
)
from pulls.deid.walker import TEXT_VRS, shift_text, words_pattern

# Counts and classes a find asks for identify no one (ours, not DICOM's names).
_PLAIN = {"QueryRetrieveLevel", "SOPClassesInStudy", "ModalitiesInStudy", "Modality"}
# What a kept text is cleaned of (walker.words_pattern).
_WORDS_FROM = ("PatientName", "PatientID", "AccessionNumber", "PatientBirthDate", "OtherPatientIDs")


@functools.cache
def _tag_and_vr(keyword: str) -> tuple[int, str] | None:
    tag = tag_for_keyword(keyword)
    if tag is None:
        return None
    return tag, dictionary_VR(tag)


class Shown:
    """A project's view of values (``keys``, ``options`` of the project)."""

    def __init__(self, keys: Keys, options: Options) -> None:
        self.keys = keys
        self.options = options
        self.actions = actions_for(options)

    def attributes(self, values: Mapping[str, object]) -> dict[str, str]:
        """Keyword -> value as the project's files would have it ("" for what goes)."""
        patient = str(values.get("PatientID", "") or "")
        shift = self.keys.shift_days(patient)
        self._words = words_pattern(
            {k: str(values.get(k, "") or "").encode("utf-8") for k in _WORDS_FROM}
        )
        out = {}
        for keyword, raw in values.items():
            value = "" if raw is None else str(raw)
            out[keyword] = self.value(keyword, value, patient, shift)
        return out

    def _clean(self, value: str) -> str:
        if self._words is None:
            return value
        return " ".join(self._words.sub(b"", value.encode("utf-8")).decode("utf-8").split())

    def value(self, keyword: str, value: str, patient: str, shift: int) -> str:
        if keyword in _PLAIN or not value:
            return value
        found = _tag_and_vr(keyword)
        if found is None:
            return ""  # not DICOM (a note): shown as nothing rather than guessed at
        tag, vr = found
        action = self.actions.of(tag)
        if action is None:
            action = UID if vr == "UI" else CLEAN if vr in ("DA", "DT") else KEEP
            if vr == "PN":
                return ""
        if action == PSEUDONYM:
            return self.keys.patient_id(patient)
        if action == ACCESSION:
            return self.keys.accession(value)
        if vr == "UI":
            return "\\".join(self.keys.uid(part) for part in value.split("\\"))
        if vr in ("DA", "DT"):
            if action in (KEEP, CLEAN, UID, DUMMY) and self.options.retain_dates:
                return shift_text(vr, value, shift) or ""
            return ""
        if action in (KEEP, CLEAN):
            return self._clean(value) if vr.encode() in TEXT_VRS else value
        return ""
