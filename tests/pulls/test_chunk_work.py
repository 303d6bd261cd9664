"""How a worker works a job's rows on its association: it goes on with the
job's queued rows, counts their studies (ahead, in one query where the PACS
allows), and proposes for a C-GET the SOP classes the PACS named."""

import contextlib

import pytest

from pulls.cli.inline import run_inline
from pulls.dicom.transfer_syntaxes import syntaxes_for
from pulls.models import ItemStatus, JobStatus
from tests.conftest import make_node, retrieval_job
from tests.pulls.retrieval_support import QUIET, assert_project_holds_exactly
from tests.pulls.scripted_pacs import ScriptedPacs

_CR = "1.2.840.10008.5.1.4.1.1.1"


@pytest.mark.parametrize("misnamed", [False, True], ids=["named", "named-wrong"])
def test_a_c_get_proposes_the_classes_the_pacs_named_and_all_if_they_were_wrong(
    storage, alice, project, dicom_data, misnamed
):
    """The count names the studies' SOP classes: their C-GET (one, naming the
    three small studies) runs on an association proposing only those. A PACS
    that named them wrong (here: CR for CT and MR studies) refuses to send what
    it has no context for; the row's C-GET is then done again at once,
    proposing every class: the row is done on its first attempt, every
    instance in the project once."""
    studies = [
        uid
        for uid, instances in sorted(dicom_data.studies.items())
        if instances[0].modality in ("CT", "MR")
    ][:3]
    instances = [i for uid in studies for i in dicom_data.studies[uid]]
    with ScriptedPacs(
        [dicom_data.root / i.path for i in instances],
        behaviour="honest",
        destinations={},
        uid_lists=True,
        name_classes=(lambda classes: [_CR]) if misnamed else None,
    ) as pacs:
        node = make_node("SCRIPTED", pacs.port, pacs.ae_title)
        node.granted_users.add(alice)
        job = run_inline(retrieval_job(alice, project, node, studies, kind="get"), **QUIET)
    assert job.status == JobStatus.DONE
    assert set(job.items.values_list("attempts", flat=True)) == {1}
    assert_project_holds_exactly(project, instances, storage, dicom_data)
    classes = {i.sop_class_uid for i in instances}
    if not misnamed:
        assert pacs.gets == 1  # the three small studies in one C-GET (study_lists)
        # C-FIND and C-GET (two models each) and the named classes, each in a
        # context per transfer syntax (19 for an image class); not ~120 classes.
        assert max(pacs.proposed_at_get) == 4 + sum(len(syntaxes_for(c)) for c in classes)
    else:
        # The three studies' C-GET (nothing could be sent: a list is not tried
        # again), the first study's own, again proposing all (this PACS cannot
        # say at IMAGE level); the others on that association, its lists of
        # classes no longer trusted.
        assert pacs.gets == 1 + len(studies) + 1
        assert pacs.proposed_at_get[:2] == [4 + len(syntaxes_for(_CR))] * 2  # CR only
        assert min(pacs.proposed_at_get[2:]) > 100


def test_a_c_get_of_a_study_with_a_class_the_pacs_left_out_is_done_again_at_once(
    storage, alice, project, dicom_data
):
    """A study of CT and MR instances, of which the PACS names only CT: the MR
    sub-operations fail (status 0xB000, the CT instances arrive); the C-GET is
    done again proposing every class, and the row is done on its first attempt."""
    from pydicom import dcmread

    studies = [dicom_data.studies[uid] for uid in sorted(dicom_data.studies)]
    ct = next(s for s in studies if s[0].modality == "CT")
    mr = next(s for s in studies if s[0].modality == "MR")
    study_uid = ct[0].study_instance_uid
    with ScriptedPacs(
        [dicom_data.root / i.path for i in ct + mr],
        behaviour="honest",
        destinations={},
        uid_lists=True,
        name_classes=lambda classes: [c for c in classes if c == ct[0].sop_class_uid],
    ) as pacs:
        for ds in pacs.datasets:  # one study of both
            ds.StudyInstanceUID = study_uid
        node = make_node("SCRIPTED", pacs.port, pacs.ae_title)
        node.granted_users.add(alice)
        # Two rows (a count names the classes of two studies or more): the other
        # study, then the mixed one.
        other = next(
            uid
            for uid, s in sorted(dicom_data.studies.items())
            if s[0].modality == "CT" and uid != study_uid
        )
        pacs.datasets += [dcmread(dicom_data.root / i.path) for i in dicom_data.studies[other]]
        job = run_inline(
            retrieval_job(alice, project, node, [other, study_uid], kind="get"), **QUIET
        )
    assert job.status == JobStatus.DONE, list(job.items.values_list("error_message", flat=True))
    item = job.items.get(row=2)
    assert (item.attempts, item.instances_expected, item.instances_received) == (
        1, len(ct + mr), len(ct + mr),
    )  # fmt: skip
    placed = {p.stem for p in (storage / project.slug).rglob("*.dcm")}
    assert placed == {i.sop_instance_uid for i in ct + mr + dicom_data.studies[other]}
    assert pacs.gets == 3  # the mixed study's C-GET twice


def _one_row_chunks_of(job) -> list[list[int]]:
    return _chunks_of(job, 1)


def _chunks_of(job, size: int) -> list[list[int]]:
    rows = list(job.items.order_by("row").values_list("pk", flat=True))
    return [rows[start : start + size] for start in range(0, len(rows), size)]


@contextlib.contextmanager
def _get_job_in_chunks(
    alice, project, dicom_data, monkeypatch, *, chunk=1, uid_lists=False, **node_limits
):
    """A started C-GET job of every study from a scripted PACS (answering UID
    lists or not), ``chunk`` rows per chunk: (the PACS, the job, its
    instances, its chunks)."""
    from pulls.jobs import queueing

    monkeypatch.setitem(queueing.CHUNK_SIZES, "get", chunk)
    studies = sorted(dicom_data.studies)
    instances = [i for uid in studies for i in dicom_data.studies[uid]]
    with ScriptedPacs(
        [dicom_data.root / i.path for i in instances],
        behaviour="honest",
        destinations={},
        uid_lists=uid_lists,
    ) as pacs:
        node = make_node("SCRIPTED", pacs.port, pacs.ae_title, **node_limits)
        node.granted_users.add(alice)
        job = retrieval_job(alice, project, node, studies, kind="get", start=True)
        yield pacs, job, instances, _chunks_of(job, chunk)


def test_a_worker_goes_on_with_the_jobs_queued_rows_on_its_association(
    storage, alice, project, dicom_data, monkeypatch
):
    """Chunks of one row: the first chunk's worker works the job's other queued
    rows too, on its association; their own messages then find nothing to do.
    Every instance is in the project exactly once. (Associations: the first,
    which counts the first row's study, proposes no storage class yet; then one
    more for each SOP class that a later count names first, as this PACS
    counts one study at a time; not one per chunk.)"""
    from pulls.workers.runner import run_chunk

    with _get_job_in_chunks(alice, project, dicom_data, monkeypatch) as (
        pacs, job, instances, chunks,
    ):  # fmt: skip
        assert len(chunks) == len(dicom_data.studies) > 1
        assert (
            run_chunk(chunks[0])
            == f"job {job.pk}: {len(chunks)} done, 0 failed or retrying, 0 deferred"
        )
        classes = {i.sop_class_uid for i in instances}
        assert pacs.associations == 1 + len(classes)
        for chunk in chunks[1:]:
            assert run_chunk(chunk) == "nothing to do"
        assert pacs.associations == 1 + len(classes)
    job.refresh_from_db()
    assert job.status == JobStatus.DONE
    assert job.instances_received == len(instances)
    assert set(job.items.values_list("attempts", flat=True)) == {1}
    assert_project_holds_exactly(project, instances, storage, dicom_data)


def test_rows_deferred_while_the_nodes_only_slot_is_taken_are_worked_by_its_holder(
    storage, alice, project, dicom_data, monkeypatch
):
    """A node that allows one association: the chunks that find it taken go
    back to the queue for a retry in seconds, and the worker that holds the
    slot goes on with them on its association. (Before, it could not see them:
    a job ran one chunk per retry, 25 times slower.)"""
    from pulls.limits import throttle
    from pulls.workers.runner import DEFERRED_SOON, run_chunk

    with _get_job_in_chunks(alice, project, dicom_data, monkeypatch, max_associations=1) as (
        pacs,
        job,
        instances,
        chunks,
    ):
        holder = throttle.association_slot(job.node, ttl=600)  # another worker's chunk, say
        for chunk in chunks[1:]:
            assert run_chunk(chunk).startswith(f"{DEFERRED_SOON} job {job.pk}: waiting")
        holder.release()
        assert (
            run_chunk(chunks[0])
            == f"job {job.pk}: {len(chunks)} done, 0 failed or retrying, 0 deferred"
        )
        for chunk in chunks[1:]:  # their retries
            assert run_chunk(chunk) == "nothing to do"
        # One to count, then one more for each SOP class a count names first
        # (this PACS counts one study at a time); not one per chunk.
        assert pacs.associations == 1 + len({i.sop_class_uid for i in instances})
    job.refresh_from_db()
    assert job.status == JobStatus.DONE
    assert set(job.items.values_list("attempts", flat=True)) == {1}
    assert_project_holds_exactly(project, instances, storage, dicom_data)


def test_a_bulk_worker_does_not_go_on_while_interactive_work_waits_for_the_node(
    storage, alice, project, dicom_data, monkeypatch
):
    """Interactive work that found every slot of the node taken marks the node:
    the bulk worker finishes its own chunk, then lets its slot go."""
    from pulls.jobs import queueing
    from pulls.limits import throttle
    from pulls.workers.runner import run_chunk

    monkeypatch.setitem(queueing.CHUNK_SIZES, "get", 1)
    # The interactive work goes on waiting while the chunk works (it would ask
    # again, marking the node again): its mark must not lapse meanwhile, however
    # long the chunk takes on a busy machine (5 s otherwise).
    monkeypatch.setattr(throttle, "PRIORITY_HOLD_MS", 600_000)
    studies = sorted(dicom_data.studies)
    with ScriptedPacs(
        [dicom_data.root / i.path for i in dicom_data.instances],
        behaviour="honest",
        destinations={},
    ) as pacs:
        node = make_node("SCRIPTED", pacs.port, pacs.ae_title, max_associations=1)
        node.granted_users.add(alice)
        job = retrieval_job(alice, project, node, studies, kind="get", start=True)
        assert job.queue == "bulk"
        taken = throttle.association_slot

        def taken_then_wanted(*args, **kwargs):
            slot = taken(*args, **kwargs)
            # An interactive job comes, finds the node's only slot taken, marks the node.
            assert taken(node, ttl=30, interactive=True) is None
            return slot

        monkeypatch.setattr(throttle, "association_slot", taken_then_wanted)
        message = run_chunk(_one_row_chunks_of(job)[0])
    assert message == f"job {job.pk}: 1 done, 0 failed or retrying, 0 deferred"
    assert job.items.filter(status=ItemStatus.PENDING).count() == len(studies) - 1


@pytest.mark.parametrize("uid_lists", [True, False], ids=["uid-lists", "one-by-one"])
def test_the_rows_a_worker_takes_are_counted_with_one_query_where_the_pacs_allows(
    uid_lists, storage, alice, project, dicom_data, monkeypatch
):
    """Rows naming studies (not from a find) need the PACS's counts: one C-FIND
    naming all of the chunk's studies in a UID list; a PACS that does not answer
    lists gets one C-FIND per study. Either way every instance arrives, counted."""
    from pulls.workers.runner import run_chunk

    studies = sorted(dicom_data.studies)
    with _get_job_in_chunks(
        alice, project, dicom_data, monkeypatch, chunk=len(studies), uid_lists=uid_lists,
        queries_per_minute=0,
    ) as (pacs, job, instances, chunks):  # fmt: skip
        run_chunk(chunks[0])
        assert pacs.finds == (1 if uid_lists else 1 + len(studies))
    job.refresh_from_db()
    assert job.status == JobStatus.DONE
    assert set(job.items.values_list("instances_expected", flat=True)) == {
        len(dicom_data.studies[uid]) for uid in studies
    }
    assert_project_holds_exactly(project, dicom_data.instances, storage, dicom_data)


@pytest.mark.parametrize(
    ("count_ahead", "chunk", "queries_per_minute", "finds", "noted"),
    [(50, 1, 0, 1, 7), (3, 1, 0, 3, 5), (2, 8, 0, 1, 0), (50, 1, 6000, 1, 7)],
)
def test_a_count_covers_the_studies_of_the_jobs_next_rows_too(
    count_ahead, chunk, queries_per_minute, finds, noted, storage, alice, project, dicom_data,
    monkeypatch,
):  # fmt: skip
    """8 studies in chunks of one row: the C-FIND that counts a chunk's study
    names the studies of the job's next waiting rows too (up to COUNT_AHEAD in
    all) and keeps their counts in those rows. The job sends one C-FIND per
    COUNT_AHEAD studies, not one per chunk (8), and so spends fewer of the
    node's query tokens. A C-GET's first count names the next studies already
    (its association is opened again after it, with the classes the count
    named), with a query limit or without: one C-FIND, not two (a C-MOVE's
    first rows are counted alone where there is no limit, see the next
    test). A chunk of more studies than COUNT_AHEAD is counted whole, with
    nothing ahead. Every instance arrives, counted; the ``noted`` rows counted
    ahead keep the SOP classes the PACS named (a C-GET proposes them)."""
    from pulls.limits import throttle
    from pulls.retrieval import preparing as retrieval
    from pulls.workers.runner import run_chunk

    monkeypatch.setattr(retrieval, "COUNT_AHEAD", count_ahead)
    with _get_job_in_chunks(
        alice, project, dicom_data, monkeypatch, chunk=chunk, uid_lists=True,
        queries_per_minute=queries_per_minute,
    ) as (pacs, job, instances, chunks):  # fmt: skip
        for rows in chunks:
            run_chunk(rows)
        assert pacs.finds == finds
    # The worker that counted ahead gave its turn back (else it held it for 30 s).
    with throttle.count_ahead_turn(job.node, job.pk) as turn:
        assert turn
    job.refresh_from_db()
    assert job.status == JobStatus.DONE
    assert dict(job.items.values_list("identifier__StudyInstanceUID", "instances_expected")) == {
        uid: len(its) for uid, its in dicom_data.studies.items()
    }
    kept = job.items.exclude(sop_classes="").values_list(
        "identifier__StudyInstanceUID", "sop_classes"
    )
    assert len(kept) == noted
    for uid, classes in kept:
        assert classes == "\\".join(sorted({i.sop_class_uid for i in dicom_data.studies[uid]}))
    assert_project_holds_exactly(project, instances, storage, dicom_data)


@pytest.mark.parametrize(("kind", "ahead"), [("move", False), ("get", True)])
def test_a_c_move_counts_its_first_rows_alone_and_a_c_get_counts_ahead_at_once(
    kind, ahead, alice, project, dicom_data, monkeypatch
):
    """An association's first rows, on a node without a query limit: a C-MOVE
    counts them alone, so that its first transfer is not held back by a count
    of 50 studies; a C-GET's first count also names the job's next studies
    (its association is opened again after the count anyway, with the
    classes named): one C-FIND either way, with the right counts."""
    from pulls.dicom import Session
    from pulls.jobs import items, queueing
    from pulls.retrieval.preparing import prepare_rows
    from pulls.workers.runner import node_peer

    monkeypatch.setitem(queueing.CHUNK_SIZES, kind, 2)
    studies = sorted(dicom_data.studies)
    with ScriptedPacs(
        [dicom_data.root / i.path for i in dicom_data.instances],
        behaviour="honest", destinations={}, uid_lists=True,
    ) as pacs:  # fmt: skip
        node = make_node("SCRIPTED", pacs.port, pacs.ae_title, queries_per_minute=0)
        node.granted_users.add(alice)
        job = retrieval_job(alice, project, node, studies, kind=kind, start=True)
        first = job.items.order_by("row").values_list("pk", flat=True)[:2]
        token, claimed = items.items_claim(list(first), worker="w")
        with Session(node_peer(node), services=("find",)) as session:
            prepare_rows(session, job, claimed, first=True)
        assert pacs.finds == 1
    assert [row.expected_now for row in claimed] == [
        len(dicom_data.studies[row.identifier["StudyInstanceUID"]]) for row in claimed
    ]
    counted_ahead = job.items.exclude(pk__in=first).filter(instances_expected__gt=0)
    assert counted_ahead.count() == (len(studies) - 2 if ahead else 0)
    for uid, expected in counted_ahead.values_list(
        "identifier__StudyInstanceUID", "instances_expected"
    ):
        assert expected == len(dicom_data.studies[uid])


def test_a_worker_does_not_count_ahead_while_another_worker_of_the_job_does(
    storage, alice, project, dicom_data, monkeypatch
):
    """The job's workers reach their second chunk together: one counts the
    job's next studies ahead, the others only their own rows meanwhile (they
    counted the same 50 studies each, a C-FIND of 10-16 ms on Orthanc). Here
    another worker holds the turn throughout: each chunk of one row is
    counted alone, 8 C-FINDs instead of 2, and every count is still right."""
    from pulls.limits import throttle
    from pulls.workers.runner import run_chunk

    with _get_job_in_chunks(
        alice, project, dicom_data, monkeypatch, chunk=1, uid_lists=True, queries_per_minute=0
    ) as (pacs, job, instances, chunks):
        with throttle.count_ahead_turn(job.node, job.pk) as turn:
            assert turn
            for rows in chunks:
                run_chunk(rows)
        assert pacs.finds == len(chunks) == 8
    job.refresh_from_db()
    assert job.status == JobStatus.DONE
    assert dict(job.items.values_list("identifier__StudyInstanceUID", "instances_expected")) == {
        uid: len(its) for uid, its in dicom_data.studies.items()
    }
    assert_project_holds_exactly(project, instances, storage, dicom_data)
