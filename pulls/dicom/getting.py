"""A C-GET that brings every instance of a study (or series) as the PACS holds it.

In a C-GET the PACS is the acceptor: it sends each instance in a context the
association offers for its SOP class, converting it if the context's syntax
is not the stored one, and failing it (Orthanc: failing the whole C-GET with
0xC000) when no context fits. So the association offers the study's classes,
one context per transfer syntax (``proposals``), and:

1. the classes are the ones the PACS named (SOPClassesInStudy, kept from the
   count or the find), else the ones an IMAGE-level C-FIND finds, else the
   broad set (every standard class: the PACS then chooses the syntax);
2. classes too many for one association (128 contexts) are fetched series by
   series, each on an association offering that series' classes;
3. a list of classes from the PACS that proves wrong (a failure, instances
   missing) is checked by an IMAGE-level C-FIND, and the C-GET done again with
   the classes left out (where the PACS cannot say, with the broad set);
4. a PACS that picks a context by SOP class alone, whatever the instance's
   syntax (DCMTK's dcmqrscp), fails the sub-operations of the instances it
   cannot convert to the first syntax it accepted: the C-GET is done again,
   one compressed syntax at a time (lossless ones first), keeping what arrived
   as it was and taking only what is new.

A stop (cancel, pause, a stalled PACS) ends it at once. No Django here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from pydicom.dataset import Dataset
from pydicom.uid import UID

from pulls.dicom.client import Session
from pulls.dicom.counting import find_classes, list_series
from pulls.dicom.errors import PacsStatusError
from pulls.dicom.identifiers import retrieve_identifier
from pulls.dicom.proposals import GET_STORAGE_CLASSES
from pulls.dicom.results import ProgressCallback, RetrieveResult
from pulls.dicom.transfer_syntaxes import UNCOMPRESSED, syntaxes_for


def _class_names(classes: Sequence[str]) -> str:
    names = []
    for uid in classes:
        name = UID(uid).name
        names.append(f"{uid} ({name})" if name and name != uid else uid)
    return ", ".join(names)


def get_as_stored(
    session: Session,
    identifier: Dataset,
    *,
    study_uid: str,
    series_uid: str | None = None,
    patient_id: str | None = None,
    model: str = "S",
    classes: Sequence[str] | None,
    expected: int,
    arrived: Callable[[], int],
    on_progress: ProgressCallback | None = None,
    stopped: Callable[[], bool] = lambda: False,
) -> RetrieveResult:
    """C-GET of ``identifier`` (a study, or a series of it) on ``session``, whose
    writer receives the instances. ``classes``: what the PACS named (None: not
    known); ``arrived()``: the instances of the study (series) received so far;
    ``stopped()``: whether the caller stopped the transfer (cancel, stall)."""
    if session.class_lists_wrong:
        classes = None  # a list of this PACS proved wrong on this session
    from_list = classes is not None

    def find(series: str | None = None) -> dict[str, set[str]] | None:
        if session.names_no_classes:
            return None
        found = find_classes(
            session, study_uid=study_uid, series_uid=series or series_uid,
            patient_id=patient_id, model=model,
        )  # fmt: skip
        session.names_no_classes = found is None
        return found

    if classes is None:
        found = find()
        classes = sorted(set().union(*found.values())) if found else None
    if classes is None:
        return _broad(
            session, identifier, model=model, expected=expected, arrived=arrived,
            on_progress=on_progress, stopped=stopped,
        )  # fmt: skip
    if not session.propose_storage(classes):
        return _series_by_series(
            session, study_uid=study_uid, patient_id=patient_id, model=model,
            classes=classes, find=find, on_progress=on_progress, stopped=stopped,
        )  # fmt: skip

    def complete(result: RetrieveResult) -> bool:
        return stopped() or (not result.failed and arrived() >= expected)

    failure: PacsStatusError | None = None
    try:
        result = session.get(identifier, model=model, on_progress=on_progress)
    except PacsStatusError as exc:
        if stopped() or not from_list:
            raise
        result, failure = None, exc  # Orthanc fails a whole C-GET for an instance it cannot send
    if result is not None and complete(result):
        return result
    if from_list:
        # The PACS's list may have left a class out: what do its instances say?
        found = find()
        if found is None:  # it cannot say: every standard class, from now on
            session.class_lists_wrong = True
            return _broad(
                session, identifier, model=model, expected=expected, arrived=arrived,
                on_progress=on_progress, stopped=stopped,
            )  # fmt: skip
        missing = sorted(set().union(*found.values()).difference(classes))
        if missing and session.propose_storage([*classes, *missing]):
            classes = [*classes, *missing]
            result = session.get(identifier, model=model, on_progress=on_progress)
            if complete(result):
                return result
            note = f"the PACS's list of SOP classes left out {_class_names(missing)}"
            result = replace(result, note=note)
        elif failure is not None:
            raise failure  # not for want of a class
    if result.failed:
        # The classes are right: a PACS that picks a context by SOP class alone.
        result = _syntax_by_syntax(
            session, identifier, model=model, classes=classes, first=result,
            expected=expected, arrived=arrived, on_progress=on_progress, stopped=stopped,
        )  # fmt: skip
    return result


_UNNAMED = (
    "the PACS does not say which SOP classes the study holds (SOPClassesInStudy, or "
    "SOPClassUID at IMAGE level), so the C-GET offered the standard ones: an instance of "
    "another class (private, retired, newer) cannot be received by C-GET from it; C-MOVE can"
)


def _broad(
    session: Session,
    identifier: Dataset,
    *,
    model: str,
    expected: int,
    arrived: Callable[[], int],
    on_progress: ProgressCallback | None,
    stopped: Callable[[], bool],
) -> RetrieveResult:
    """Nothing says which classes: the broad set, each class in one context listing
    every syntax (the PACS chooses, and may convert); then syntax by syntax for
    the instances it failed to send."""
    session.propose_storage(None)
    result = session.get(identifier, model=model, on_progress=on_progress)
    if stopped() or not result.failed:
        return result
    result = _syntax_by_syntax(
        session, identifier, model=model, classes=None, first=result, expected=expected,
        arrived=arrived, on_progress=on_progress, stopped=stopped,
    )  # fmt: skip
    if result.failed:
        result = replace(result, note=f"{result.note}; {_UNNAMED}" if result.note else _UNNAMED)
    return result


def _syntax_by_syntax(
    session: Session,
    identifier: Dataset,
    *,
    model: str,
    classes: Sequence[str] | None,
    first: RetrieveResult,
    expected: int,
    arrived: Callable[[], int],
    on_progress: ProgressCallback | None,
    stopped: Callable[[], bool],
) -> RetrieveResult:
    """The C-GET again with one compressed syntax offered per class at a time, for
    a PACS that sends every instance of a class in the first context it accepted
    for it and fails those it cannot convert. What arrived stays as it is.
    ``classes`` None: the broad set's classes."""
    in_pass = list(classes) if classes is not None else GET_STORAGE_CLASSES
    # In the order of the offer: lossless before lossy (transfer_syntaxes), so a
    # PACS able to compress never sends a lossless original lossily first.
    order: list[str] = []
    for uid in in_pass:
        order += [s for s in syntaxes_for(uid) if s not in order]
    passes = [syntax for syntax in order if syntax not in UNCOMPRESSED]
    result = first
    received_before = arrived()
    writer = session.writer
    writer.keep_existing = True
    tried: list[str] = []
    try:
        for syntax in passes:
            if stopped():
                break
            if not session.propose_storage(in_pass, only_syntax=syntax):
                continue
            if not session.offers_storage():
                continue  # the PACS accepts no context in this syntax
            tried.append(syntax)
            try:
                result = session.get(identifier, model=model, on_progress=on_progress)
            except PacsStatusError:
                continue  # nothing could be sent in this syntax: the next one
            if not result.failed or arrived() >= expected:
                break
    finally:
        writer.keep_existing = False
        session.propose_storage(classes)  # the association as it was, for the next rows
    gained = arrived() - received_before
    # The last pass's counts say nothing of the others': what is missing now is.
    missing = max(expected - arrived(), 0) if expected > 0 else result.failed
    result = replace(
        result,
        status=0 if not missing else result.status,
        completed=first.completed + max(gained, 0),
        failed=missing,
        failed_sop_uids=result.failed_sop_uids if missing else [],
    )
    if missing:
        names = ", ".join(UID(s).name for s in tried) or "none accepted"
        result = replace(
            result,
            note=(
                f"the PACS failed to send {missing} instance(s)"
                + (f" in the SOP classes {_class_names(classes)}" if classes else "")
                + f"; also asked for one transfer syntax at a time ({names}), which brought "
                f"{gained} more"
            ),
        )
    return result


def _series_by_series(
    session: Session,
    *,
    study_uid: str,
    patient_id: str | None,
    model: str,
    classes: Sequence[str],
    find: Callable[[str | None], dict[str, set[str]] | None],
    on_progress: ProgressCallback | None,
    stopped: Callable[[], bool],
) -> RetrieveResult:
    """The study's series one C-GET each, on associations offering each series'
    classes: a study whose classes do not fit in one association."""
    total: RetrieveResult | None = None
    for series in list_series(session, study_uid=study_uid, patient_id=patient_id, model=model):
        if stopped():
            break
        found = find(series)
        series_classes = sorted(set().union(*found.values())) if found else []
        if not series_classes or not session.propose_storage(series_classes):
            raise PacsStatusError(
                "C-GET",
                0xC000,
                comment=(
                    f"series {series} holds SOP classes that do not fit in one association "
                    f"({_class_names(series_classes or classes)})"
                ),
            )
        row = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series}
        if patient_id:
            row["PatientID"] = patient_id
        result = session.get(
            retrieve_identifier(row, model=model), model=model, on_progress=on_progress
        )
        total = result if total is None else _sum(total, result)
    if total is None:
        raise PacsStatusError("C-GET", 0xC000, comment=f"study {study_uid} lists no series")
    return total


def _sum(a: RetrieveResult, b: RetrieveResult) -> RetrieveResult:
    return replace(
        b,
        status=b.status if b.status else a.status,
        completed=a.completed + b.completed,
        failed=a.failed + b.failed,
        warning=a.warning + b.warning,
        failed_sop_uids=a.failed_sop_uids + b.failed_sop_uids,
        responses=a.responses + b.responses,
        seconds=a.seconds + b.seconds,
        cancelled=a.cancelled or b.cancelled,
        unwritten=a.unwritten + b.unwritten,
        no_space=a.no_space or b.no_space,
        note="; ".join(n for n in (a.note, b.note) if n),
    )
