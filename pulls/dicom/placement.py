"""Placing received instances into a project's storage (DESIGN §5).

Layout: ``{PatientID}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm``
under the project's folder, every component sanitised: UIDs pass only when
they match ``^[0-9.]{1,64}$``, a PatientID only when it is plain letters,
digits, dot, dash and underscore; anything else is replaced by a hash. An
instance placed twice overwrites itself. This is the one function a
transform (pseudonymisation, later) joins.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

from pydicom import dcmread

from pulls.dicom.headers import HEAD_SIZE, KEYWORDS, keys_from_head, scan_tags
from pulls.dicom.paths import layout_relpath
from pulls.dicom.receiving import Placed

_META_CLASS, _META_TS = 0x00020002, 0x00020010


def file_head_keys(head: bytes | memoryview) -> dict[str, str] | None:
    """The keys from a file's first bytes without pydicom (the common case)."""
    if head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
        return None
    meta_end = 144 + int.from_bytes(head[140:144], "little")
    meta = scan_tags(head[132:meta_end], {_META_CLASS, _META_TS}, implicit=False)
    if not meta or _META_TS not in meta:
        return None
    syntax = meta[_META_TS].decode("ascii", "replace")
    keys = keys_from_head(head[meta_end:], syntax)
    if keys is not None:
        keys["SOPClassUID"] = meta.get(_META_CLASS, b"").decode("ascii", "replace")
        keys["TransferSyntaxUID"] = syntax
    return keys


def header_keys(path: str | Path) -> dict[str, str]:
    """The placement keys of a DICOM file, with its SOP class and transfer syntax."""
    with open(path, "rb") as fh:
        head = fh.read(HEAD_SIZE)
    keys = file_head_keys(head)
    if keys is not None:
        return keys
    ds = dcmread(path, stop_before_pixels=True, specific_tags=KEYWORDS)
    keys = {key: str(ds.get(key, "") or "") for key in KEYWORDS}
    meta = ds.file_meta
    keys["SOPClassUID"] = str(meta.get("MediaStorageSOPClassUID", "") or "")
    keys["TransferSyntaxUID"] = str(meta.get("TransferSyntaxUID", "") or "")
    return keys


def _move(staged: str, final: str) -> None:
    """Rename; across file systems, copy to a temp name, rename, then delete."""
    try:
        os.replace(staged, final)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        folder, _, name = final.rpartition("/")
        tmp = f"{folder}/.{name}.part"
        try:
            shutil.copyfile(staged, tmp)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.unlink(staged)


def place_instance(
    staged: str, project_dir: str, *, keys: dict[str, str] | None = None, size: int | None = None
) -> Placed:
    """Move one staged file into the project's layout (rename; copy across devices).
    Paths are strings: this runs for every instance."""
    keys = keys or header_keys(staged)
    name = staged.rpartition("/")[2]
    relative = layout_relpath(keys, fallback_sop=name.removesuffix(".dcm"))
    final = f"{project_dir}/{relative}"
    if size is None:
        size = os.stat(staged).st_size
    try:
        _move(staged, final)
    except FileNotFoundError:  # the first instance of this series
        os.makedirs(final.rpartition("/")[0], exist_ok=True)
        _move(staged, final)
    return Placed(
        path=relative,
        patient_id=keys["PatientID"],
        study_instance_uid=keys["StudyInstanceUID"],
        series_instance_uid=keys["SeriesInstanceUID"],
        sop_instance_uid=keys["SOPInstanceUID"],
        modality=keys["Modality"],
        size=size,
        sop_class_uid=keys.get("SOPClassUID", ""),
        transfer_syntax=keys.get("TransferSyntaxUID", ""),
    )
