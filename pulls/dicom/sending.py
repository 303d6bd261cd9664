"""Sending files to a DICOM node by C-STORE, in the syntax each is stored in.

One association carries a study (``StoreSession``): it proposes, for each SOP
class of the files, one presentation context per stored transfer syntax (the
node takes each instance as it is) and one with explicit and implicit VR little
endian, used only when the node accepts nothing else for that class. Then an
instance is converted losslessly by DCMTK (``dcmconv``, ``dcmdjpeg``,
``dcmdjpls``, ``dcmdrle``): a JPEG 2000 file that the node does not take as it
is cannot be converted here and fails with that reason. The file's data set is
sent as its bytes are, after its file meta information: nothing decodes it.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pynetdicom.presentation import PresentationContext

from pulls.dicom.client import Session
from pulls.dicom.commands import C_STORE_RQ, C_STORE_RSP, encode_command
from pulls.dicom.errors import PacsError
from pulls.dicom.peer import Peer
from pulls.dicom.proposals import MAX_CONTEXTS
from pulls.dicom.wire import encode_association_request

EXPLICIT_LE, IMPLICIT_LE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
NATIVE = (EXPLICIT_LE, IMPLICIT_LE)
# What converts a syntax to explicit VR little endian, losslessly (DCMTK).
_CONVERTERS = {
    IMPLICIT_LE: "dcmconv",
    "1.2.840.10008.1.2.2": "dcmconv",  # explicit big endian
    "1.2.840.10008.1.2.1.99": "dcmconv",  # deflated
    "1.2.840.10008.1.2.4.50": "dcmdjpeg",
    "1.2.840.10008.1.2.4.51": "dcmdjpeg",
    "1.2.840.10008.1.2.4.57": "dcmdjpeg",
    "1.2.840.10008.1.2.4.70": "dcmdjpeg",
    "1.2.840.10008.1.2.4.80": "dcmdjpls",
    "1.2.840.10008.1.2.4.81": "dcmdjpls",
    "1.2.840.10008.1.2.5": "dcmdrle",
}
# Statuses a C-STORE-RSP may carry that mean "stored" (success, and the
# warnings of PS3.4 B.2.3: coerced, elements discarded, not fully validated).
STORED = {0x0000, 0xB000, 0xB006, 0xB007}


class TooManyContexts(ValueError):
    """The files' classes and syntaxes need more contexts than an association has."""


@dataclass(frozen=True)
class StoredFile:
    """What a file's meta information says, and where its data set starts."""

    path: Path
    sop_class: str
    sop_instance: str
    syntax: str
    offset: int


def read_meta(path: Path) -> StoredFile:
    """The file meta information of a DICOM file (PS3.10 7.1), read directly."""
    with open(path, "rb") as fh:
        head = fh.read(132 + 12)
        if len(head) < 144 or head[128:132] != b"DICM":
            raise ValueError(f"{path.name} is not a DICOM file (no DICM prefix)")
        group_length = struct.unpack("<I", head[140:144])[0]
        meta = fh.read(group_length)
    values: dict[int, str] = {}
    at = 0
    while at + 8 <= len(meta):
        element = struct.unpack_from("<H", meta, at + 2)[0]
        vr = meta[at + 4 : at + 6]
        if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT", b"UC", b"UR"):
            length = struct.unpack_from("<I", meta, at + 8)[0]
            start = at + 12
        else:
            length = struct.unpack_from("<H", meta, at + 6)[0]
            start = at + 8
        values[element] = meta[start : start + length].rstrip(b"\x00 ").decode("ascii", "replace")
        at = start + length
    return StoredFile(
        path=path,
        sop_class=values.get(0x0002, ""),
        sop_instance=values.get(0x0003, ""),
        syntax=values.get(0x0010, ""),
        offset=144 + group_length,
    )


def contexts_for(files: Iterable[StoredFile]) -> list[tuple[str, tuple[str, ...]]]:
    """(class, syntaxes) of each context to propose for these files."""
    stored: dict[str, set[str]] = {}
    for one in files:
        stored.setdefault(one.sop_class, set()).add(one.syntax)
    contexts = []
    for sop_class in sorted(stored):
        for syntax in sorted(stored[sop_class]):
            contexts.append((sop_class, (syntax,)))
        contexts.append((sop_class, NATIVE))  # the fallback, converted losslessly
    if len(contexts) > MAX_CONTEXTS:
        raise TooManyContexts(
            f"{len(stored)} SOP classes in {len(contexts)} presentation contexts: more than "
            f"the {MAX_CONTEXTS} of an association"
        )
    return contexts


def _converted(one: StoredFile, syntax: str) -> bytes:
    """The data set of ``one`` in ``syntax`` (explicit or implicit little endian)."""
    tool = _CONVERTERS.get(one.syntax)
    if tool is None:
        raise ValueError(
            f"the node does not accept {one.syntax} for this class, and it cannot be "
            "converted here without loss"
        )
    program = shutil.which(tool)
    if program is None:
        raise ValueError(f"{tool} (Debian package dcmtk) is needed to convert {one.syntax}")
    option = "+te" if syntax == EXPLICIT_LE else "+ti"
    with tempfile.TemporaryDirectory(prefix="pacsnpull-convert-") as folder:
        out = Path(folder) / "converted.dcm"
        done = subprocess.run(
            [program, option, str(one.path), str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            timeout=300,
        )
        if done.returncode or not out.exists():
            raise ValueError(f"{tool} could not convert it (exit status {done.returncode})")
        converted = read_meta(out)
        return out.read_bytes()[converted.offset :]


@dataclass
class Outcome:
    sop_instance: str
    status: int | None  # None: not sent (no context, conversion failed)
    message: str = ""
    converted: bool = False


@dataclass
class SendResult:
    sent: int = 0
    bytes: int = 0
    converted: int = 0
    failed: list[Outcome] = field(default_factory=list)


class StoreSession(Session):
    """An association proposing storage contexts for these files (``contexts_for``)."""

    def __init__(self, peer: Peer, files: list[StoredFile]) -> None:
        super().__init__(peer, services=())
        self.contexts = contexts_for(files)
        self._by_pair: dict[tuple[str, str], int] = {}

    def _association_request(self):
        proposed = []
        for sop_class, syntaxes in self.contexts:
            cx = PresentationContext()
            cx.abstract_syntax = sop_class
            cx.transfer_syntax = list(syntaxes)
            proposed.append(cx)
        return encode_association_request(
            calling_ae=self.peer.calling_ae, called_ae=self.peer.called_ae, contexts=proposed
        )

    def _open(self) -> None:
        super()._open()
        self._by_pair = {
            (abstract, syntax): context_id
            for context_id, (abstract, syntax) in self._require().accepted.contexts.items()
        }

    def store(self, one: StoredFile) -> Outcome:
        """C-STORE of one file: as stored, else converted; its status."""
        context = self._by_pair.get((one.sop_class, one.syntax))
        converted = False
        if context is None:
            for syntax in NATIVE:
                context = self._by_pair.get((one.sop_class, syntax))
                if context is not None:
                    try:
                        data = _converted(one, syntax)
                    except (ValueError, subprocess.TimeoutExpired) as exc:
                        return Outcome(one.sop_instance, None, str(exc))
                    converted = True
                    break
            else:
                return Outcome(
                    one.sop_instance,
                    None,
                    f"the node accepts no presentation context for SOP class {one.sop_class}",
                )
        else:
            with open(one.path, "rb") as fh:
                fh.seek(one.offset)
                data = fh.read()
        if len(data) % 2:
            # A deflated data set of odd length (PS3.5 A.5: padded with a NUL to
            # an even length; some writers leave it off, and DCMTK's SCP refuses
            # an odd PDV).
            data += b"\x00"
        msg_id = self._next_msg_id()
        command = {
            0x0002: one.sop_class,
            0x0100: C_STORE_RQ,
            0x0110: msg_id,
            0x0700: 0,  # priority: medium
            0x0800: 0x0000,  # a data set follows
            0x1000: one.sop_instance,
        }
        self._require().send_message(context, encode_command(command), data)
        fields, _ = self._response("C-STORE", C_STORE_RSP, msg_id)
        status = int(fields.get(0x0900, 0xC000))
        comment = str(fields.get(0x0902, "") or "")
        return Outcome(one.sop_instance, status, comment, converted)


def send_files(peer: Peer, paths: list[Path], *, attempts: int = 3) -> SendResult:
    """Every file on one association (a study); those the node refused with a
    status are tried again, up to ``attempts`` times in all, on a new one.
    PacsError when an association cannot be had."""
    result = SendResult()
    pending = [read_meta(path) for path in paths]
    for attempt in range(1, attempts + 1):
        refused: list[tuple[StoredFile, Outcome]] = []
        with StoreSession(peer, pending) as session:
            for one in pending:
                outcome = session.store(one)
                if outcome.status in STORED:
                    result.sent += 1
                    result.bytes += one.path.stat().st_size
                    result.converted += outcome.converted
                elif outcome.status is None:  # no context, no conversion: will not heal
                    result.failed.append(outcome)
                else:
                    refused.append((one, outcome))
        if not refused or attempt == attempts:
            result.failed.extend(outcome for _, outcome in refused)
            return result
        pending = [one for one, _ in refused]
    return result


__all__ = ["PacsError", "SendResult", "StoreSession", "read_meta", "send_files"]
