"""The staging area: received instances by study, ``staging/<study>/<sop>.dcm``.

Written by the storage SCP (``receiving.InstanceWriter``), read by the worker
that asked for the instances.

Each study folder also holds an index, ``.keys``: a line per instance the SCP
wrote (file name, inode, size, then the INDEX_KEYS it read while receiving),
so that the worker places the files without opening each one again. It is a
hint, not the record: a line counts only for the file with that name *and*
inode, and a file without one (or whose values hold a tab or a line break)
is read as before.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pulls.dicom.paths import safe_component

TEMP_PREFIX = ".incoming-"
INDEX_NAME = ".keys"
INDEX_KEYS = (
    "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "Modality",
    "SOPClassUID", "TransferSyntaxUID",
)  # fmt: skip
_APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
_INDEX_WIDTH = 3 + len(INDEX_KEYS)  # name, inode, size, keys


def study_name(study_uid: str) -> str:
    """The folder name of a study; sanitised (see ``safe_component``)."""
    return safe_component(study_uid or "unknown-study")


def study_dir(staging: Path, study_uid: str) -> Path:
    return staging / study_name(study_uid)


def instance_name(sop_uid: str) -> str:
    return f"{safe_component(sop_uid)}.dcm"


def staged_names(staging: Path, study_uid: str) -> list[str]:
    """The names of a study's complete files (temp files of writes in progress excluded)."""
    try:
        names = os.listdir(study_dir(staging, study_uid))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [name for name in names if name.endswith(".dcm") and not name.startswith(".")]


def staged_sop_files(staging: Path, study_uid: str) -> list[Path]:
    """The complete files of a study."""
    folder = study_dir(staging, study_uid)
    return [folder / name for name in staged_names(staging, study_uid)]


def remove_cut_writes(incoming: Path, *, older_than: float) -> int:
    """Remove the temp files in an ``.incoming`` folder (of the staging area or
    of a project) last written before ``older_than`` (a time): writes cut short
    by a crash, incomplete by definition. Returns how many were removed."""
    removed = 0
    try:
        entries = list(os.scandir(incoming))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX):
            continue
        with contextlib.suppress(FileNotFoundError):  # finished meanwhile
            if entry.stat().st_mtime < older_than:
                os.unlink(entry.path)
                removed += 1
    return removed


class IndexWriter:
    """Appends lines to the indexes of the study folders one association
    writes to, keeping each index open until ``close`` (one ``write`` per
    instance; lines of concurrent associations do not interleave, as each is
    one write in append mode). A failure (a full disk) costs only speed: the
    worker then reads the file's header."""

    def __init__(self) -> None:
        self._open: dict[str, int] = {}

    def append(self, folder: str, name: str, inode: int, size: int, keys: dict[str, str]) -> None:
        line = "\t".join([name, str(inode), str(size), *(keys.get(key, "") for key in INDEX_KEYS)])
        if line.count("\t") != _INDEX_WIDTH - 1 or "\n" in line or "\r" in line:
            return  # a value the line format cannot hold: read from the file instead
        line += "\n"
        try:
            fd = self._open.get(folder)
            if fd is None:
                if len(self._open) >= 16:
                    self.close()
                fd = self._open[folder] = os.open(f"{folder}/{INDEX_NAME}", _APPEND_FLAGS, 0o640)
            os.write(fd, line.encode("utf-8", "surrogateescape"))
        except OSError:
            pass

    def close(self) -> None:
        for fd in self._open.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._open.clear()


def staged_index(staging: Path, study_uid: str) -> dict[str, tuple[int, int, dict[str, str]]]:
    """File name -> (inode, size, keys) from a study folder's index; lines
    that are not whole (a write cut short) are left out."""
    try:
        with open(study_dir(staging, study_uid) / INDEX_NAME, "rb") as fh:
            text = fh.read().decode("utf-8", "surrogateescape")
    except (FileNotFoundError, NotADirectoryError):
        return {}
    found = {}
    for line in text.split("\n")[:-1]:  # the last part has no line end yet
        fields = line.split("\t")
        if len(fields) != _INDEX_WIDTH or not (fields[1].isdigit() and fields[2].isdigit()):
            continue
        keys = dict(zip(INDEX_KEYS, fields[3:], strict=True))
        found[fields[0]] = (int(fields[1]), int(fields[2]), keys)
    return found


def staged_entries(staging: Path, study_uid: str) -> list[tuple[str, int]]:
    """(name, inode) of a study's complete files, from one directory listing."""
    try:
        with os.scandir(study_dir(staging, study_uid)) as entries:
            return [
                (entry.name, entry.inode())
                for entry in entries
                if entry.name.endswith(".dcm") and not entry.name.startswith(".")
            ]
    except (FileNotFoundError, NotADirectoryError):
        return []


def index_clear(staging: Path, study_uid: str) -> None:
    """Empty a study folder's index once no staged file is left in it. A line
    appended meanwhile by the SCP may go with it: its file is then read."""
    if not staged_names(staging, study_uid):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            os.truncate(study_dir(staging, study_uid) / INDEX_NAME, 0)
