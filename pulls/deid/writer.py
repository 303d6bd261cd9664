"""C-GET into a pseudonymised project: each data set de-identified on arrival.

A ``ProjectWriter`` whose instances are written by ``Pseudonymiser.place``
from the received bytes (in memory; a data set too big for memory is spilled
to the staging area, outside the project): an original never enters the
project's folder, not even under a temp name. Instances that may show
burned-in text go, as they came, to ``<staging>/.withheld/<study>/`` for the
worker to set aside in quarantine (``withheld``).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from pulls.deid.files import BurnedIn, Pseudonymiser
from pulls.deid.walker import UnreadableDataSet
from pulls.dicom.paths import layout_relpath
from pulls.dicom.receiving import UNREQUESTED, Placed, ProjectWriter, create_file, write_all
from pulls.dicom.staging import instance_name, study_name

WITHHELD = ".withheld"


class PseudonymisingWriter(ProjectWriter):
    def __init__(self, project_dir: Path, pseudonymiser: Pseudonymiser, staging_dir: Path) -> None:
        super().__init__(project_dir)
        self.pseudonymiser = pseudonymiser
        # Spilled data sets (originals) wait outside the project.
        self.incoming = staging_dir / ".incoming-get"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.incoming_path = str(self.incoming)
        self.withheld_dir = str(staging_dir / WITHHELD)
        self.withheld: list[Placed] = []
        self._lock = threading.Lock()

    def keep(self, pending, keys: dict[str, str]) -> None:
        asked = self._asked_for(keys)
        if asked and self.keep_existing:
            # Done again one syntax at a time: what is in its place stays.
            mapped = self.pseudonymiser.keys
            relative = layout_relpath(
                {
                    "PatientID": mapped.patient_id(keys["PatientID"]),
                    "StudyInstanceUID": mapped.uid(keys["StudyInstanceUID"]),
                    "SeriesInstanceUID": mapped.uid(keys["SeriesInstanceUID"]),
                    "SOPInstanceUID": mapped.uid(pending.sop_uid),
                }
            )
            if os.path.exists(f"{self.root}/{relative}"):
                pending.discard()
                return
        spilled = pending.spill_path
        data = b""
        try:
            if spilled is not None:  # too big for memory: the spill file is a DICOM file
                pending.spill_path = None
                done = self.pseudonymiser.place_file(spilled, self.root)
            else:
                data = pending.dataset_bytes()
                done = self.pseudonymiser.place(
                    data, pending.transfer_syntax, self.root, sop_class=pending.sop_class
                )
        except BurnedIn as why:
            if spilled is not None:
                self._withhold_file(keys, spilled, pending.sop_uid, why.reason)
                return
            self._withhold(pending, keys, data, why.reason)
            return
        except UnreadableDataSet as why:
            reason = f"it cannot be de-identified: {why}"
            if spilled is not None:
                self._withhold_file(keys, spilled, pending.sop_uid, reason)
                return
            self._withhold(pending, keys, data, reason)
            return
        finally:
            if spilled is not None:
                spilled.unlink(missing_ok=True)
        if not asked:
            # Of another study: de-identified all the same, and set aside.
            final = f"{self.root}/{UNREQUESTED}/{study_name(done.keys['StudyInstanceUID'])}"
            os.makedirs(final, exist_ok=True)
            name = instance_name(done.keys["SOPInstanceUID"])
            os.replace(f"{self.root}/{done.relative}", f"{final}/{name}")
            relative = f"{UNREQUESTED}/{study_name(done.keys['StudyInstanceUID'])}/{name}"
        else:
            relative = done.relative
        placed = done.placed(relative)
        with self._lock:
            (self.placed_instances if asked else self.unrequested).append(placed)

    def _withhold(self, pending, keys: dict[str, str], data: bytes, reason: str) -> None:
        """The original, as it came, to ``.withheld`` in the staging area."""
        folder = f"{self.withheld_dir}/{study_name(keys['StudyInstanceUID'])}"
        name = instance_name(pending.sop_uid)
        fd = create_file(folder, f".{name}.part")
        try:
            write_all(fd, [pending.header, data])
        finally:
            os.close(fd)
        os.replace(f"{folder}/.{name}.part", f"{folder}/{name}")
        self._withheld(keys, f"{folder}/{name}", pending.sop_uid, reason)

    def _withhold_file(self, keys: dict[str, str], path: Path, sop_uid: str, reason: str) -> None:
        """A spilled original (a whole DICOM file in the staging area) withheld."""
        folder = f"{self.withheld_dir}/{study_name(keys['StudyInstanceUID'])}"
        os.makedirs(folder, exist_ok=True)
        name = instance_name(sop_uid)
        os.replace(path, f"{folder}/{name}")
        self._withheld(keys, f"{folder}/{name}", sop_uid, reason)

    def _withheld(self, keys: dict[str, str], where: str, sop_uid: str, reason: str) -> None:
        placed = Placed(
            path=where,
            patient_id="",
            study_instance_uid="",
            series_instance_uid="",
            sop_instance_uid=self.pseudonymiser.keys.uid(sop_uid),
            modality=keys.get("Modality", ""),
            size=os.stat(where).st_size,
            source_study_uid=keys["StudyInstanceUID"],
            source_series_uid=keys["SeriesInstanceUID"],
            source_patient_id=keys["PatientID"],
            burned_in=reason,
            withheld=True,
        )
        with self._lock:
            (self.placed_instances if self._asked_for(keys) else self.unrequested).append(placed)
