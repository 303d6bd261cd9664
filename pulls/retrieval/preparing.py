"""Before a batch of rows is worked: what the project holds of their studies,
what the PACS expects (one count for many studies, and ahead for the job's
next rows), the SOP classes a C-GET's association proposes, and which small
studies a C-GET fetches together (study lists)."""

from __future__ import annotations

from django.db import connection, transaction

from pulls.dicom import Session
from pulls.dicom.counting import StudyCount, count_studies
from pulls.dicom.receiving import ProjectWriter
from pulls.dicom.study_lists import LIST_INSTANCES, LIST_STUDIES, STUDY_INSTANCES, StudyList
from pulls.limits.throttle import count_ahead_turn
from pulls.models import ItemStatus, Job, JobItem, JobKind
from pulls.retrieval.records import present_by_study
from pulls.retrieval.work import (
    counted_before,
    on_connection,
    storage_classes_known,
    storage_classes_of,
)

# The C-FIND that counts a chunk's studies names the job's next uncounted
# studies too, up to this many in all: one query (and one of the node's query
# tokens) per ~50 studies instead of one per chunk of 5. A count is taken at
# most ten chunks before its row is worked (longer ago only if the job waited).
COUNT_AHEAD = 50


def _waiting_uncounted(job: Job, limit: int) -> dict[str, list[int]]:
    """Study UID -> ids of the job's next waiting rows (first attempt, study
    level) that no count covers yet, in row order."""
    waiting = (
        JobItem.objects.filter(job=job, status=ItemStatus.PENDING, attempts=0, instances_expected=0)
        .order_by("row")
        .values_list("pk", "identifier")[:limit]
    )
    found: dict[str, list[int]] = {}
    for pk, keys in waiting:
        uid = keys.get("StudyInstanceUID")
        if uid and not keys.get("SeriesInstanceUID"):
            found.setdefault(uid, []).append(pk)
    return found


# Only rows still waiting for their first attempt take a count ahead: a row
# claimed meanwhile counts its study itself (or already has its count).
_NOTE_COUNT = (
    f"UPDATE {JobItem._meta.db_table} SET instances_expected = %s, sop_classes = %s "  # noqa: S608
    "WHERE id = %s AND status = %s AND attempts = 0 AND instances_expected = 0"
)
# The same on PostgreSQL, for all the rows at once (as records._UPSERT_ARRAYS): 45 rows
# in 2.3 ms instead of 6.0 (psycopg sends an executemany's rows one by one).
_NOTE_COUNTS = (
    f"UPDATE {JobItem._meta.db_table} AS item "  # noqa: S608
    "SET instances_expected = u.expected, sop_classes = u.classes "
    "FROM unnest(%s::integer[], %s::text[], %s::bigint[]) AS u(expected, classes, id) "
    "WHERE item.id = u.id AND item.status = %s AND item.attempts = 0 "
    "AND item.instances_expected = 0"
)


def _note_counts(noted: list[tuple[int, str, int]]) -> None:
    """Keep counts taken ahead, (instances, SOP classes, item id) each, in rows
    still waiting for their first attempt, in one transaction."""
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(_NOTE_COUNTS, [*map(list, zip(*noted, strict=True)), ItemStatus.PENDING])
        else:
            cursor.executemany(_NOTE_COUNT, [(*one, ItemStatus.PENDING) for one in noted])


def prepare_rows(session: Session, job: Job, items: list[JobItem], *, first: bool = False) -> None:
    """For the rows about to be worked: what the project holds of their studies
    (one query for all) and what the PACS expects, with one C-FIND for all of
    their studies where it can (counting.count_studies), which also counts the
    studies of the job's next waiting rows (COUNT_AHEAD), kept in those rows —
    except for a C-MOVE association's ``first`` rows on a node without a query
    limit: a count of 50 studies would hold its first transfer back (~10 ms
    on Orthanc); its next chunk counts ahead. A C-GET's first count names the
    next studies at once: the association is opened again after it anyway,
    to propose the classes the count named, and a count ahead later stopped
    a transfer in the middle of the job, when the cores are busiest (+3.7 %
    and +8.5 %, alternated job by job; for C-MOVE it cost 5 %). Where the
    node allows so many queries a minute, each query waits for its slot (0.5
    s at 120 a minute), so the first count already names the next studies.
    Kept on each row (``present_now``, ``expected_now``, ``classes_now``) for
    retrieve_item. A C-GET's association then proposes the SOP classes of all
    these studies that the PACS named (one association for ~50 studies), and
    the rows of its small studies get a ``study_list`` (_list_small_studies)."""
    present = present_by_study(
        job.project, {item.identifier.get("StudyInstanceUID") for item in items}
    )
    for item in items:
        keys = item.identifier
        item.present_now = present.of_row(
            keys.get("StudyInstanceUID"), keys.get("SeriesInstanceUID")
        )
    studies = {
        uid: item
        for item in items
        if (uid := item.identifier.get("StudyInstanceUID"))
        and not counted_before(item)
        and not item.identifier.get("SeriesInstanceUID")
    }
    if not studies:  # counted before (by the find, or ahead)
        _propose_for(session, job, items, {})
        _list_small_studies(session, job, items)
        return
    alone = first and not job.node.queries_per_minute and job.kind != JobKind.GET
    counts = _count(session, job, studies, room=0 if alone else COUNT_AHEAD - len(studies))
    for uid, count in counts.items():
        if uid in studies:
            studies[uid].expected_now = count.instances
            studies[uid].classes_now = "\\".join(count.sop_classes or ())
    _propose_for(session, job, items, counts)
    _list_small_studies(session, job, items)


def _list_small_studies(session: Session, job: Job, items: list[JobItem]) -> None:
    """A C-GET's rows of small studies, in runs of consecutive rows, each get a
    ``study_list`` that fetches their studies with one C-GET (study_lists).
    Not for a pseudonymised project (its writer places instances after the
    C-GET's answers, off the association), nor in the patient root model."""
    if (
        not on_connection(job)
        or type(session.writer) is not ProjectWriter
        or session.study_lists_refused
        or job.node.query_model != "S"
    ):
        return
    runs: list[list[JobItem]] = [[]]
    instances = 0
    for item in items:
        keys = item.identifier
        study = keys.get("StudyInstanceUID")
        expected = item.instances_expected if counted_before(item) else None
        expected = getattr(item, "expected_now", None) if expected is None else expected
        fits = (
            study
            and not keys.get("SeriesInstanceUID")
            and expected is not None
            and 0 < expected <= STUDY_INSTANCES
            and len(item.present_now) < expected
            and storage_classes_of(item) is not None
        )
        run = runs[-1]
        if (
            not fits
            or len(run) == LIST_STUDIES
            or instances + expected > LIST_INSTANCES
            or any(other.identifier["StudyInstanceUID"] == study for other in run)
        ):
            runs.append([])
            instances = 0
        if fits:
            runs[-1].append(item)
            instances += expected
    for run in runs:
        if len(run) < 2:
            continue
        listed = StudyList(
            [item.identifier["StudyInstanceUID"] for item in run], storage_classes_known(run)
        )
        for item in run:
            item.study_list = listed


def _count(session: Session, job: Job, studies: dict, *, room: int) -> dict[str, StudyCount]:
    """Counts of ``studies`` with one C-FIND, which also names up to ``room`` of
    the job's next uncounted studies and notes their counts in their rows, when
    no other worker of the job is counting ahead (throttle.count_ahead_turn)."""

    def query(uids: list[str]) -> dict[str, StudyCount]:
        return count_studies(session, uids, model=job.node.query_model, classes=on_connection(job))

    if room <= 0 or job.node.query_model != "S":  # patient root: one by one (count_studies)
        return query(list(studies))
    with count_ahead_turn(job.node, job.pk) as turn:
        ahead = _waiting_uncounted(job, room) if turn else {}
        counts = query([*studies, *ahead])
        noted = [
            (count.instances, "\\".join(count.sop_classes or ()), pk)
            for uid, pks in ahead.items()
            if (count := counts.get(uid)) is not None
            for pk in pks
        ]
        if noted:
            _note_counts(noted)
    return counts


def _propose_for(session: Session, job: Job, items: list[JobItem], counts: dict) -> None:
    """A C-GET's association proposes the SOP classes of the rows about to be
    worked and of the studies just counted ahead, where the PACS named them
    (one re-association for many rows, not one per new class)."""
    if not on_connection(job):
        return
    named = storage_classes_known(items)
    ahead = named.union(uid for count in counts.values() for uid in count.sop_classes or ())
    # Each class takes a context per transfer syntax: when the studies counted
    # ahead do not fit beside these rows', these rows' go first (and a row's
    # C-GET proposes what it needs in any case).
    if ahead and not session.propose_storage(ahead) and named:
        session.propose_storage(named)
