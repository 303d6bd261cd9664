"""PACS that lie, stall or refuse: the engine says what happened, in words a person can use."""

import pytest
from django.conf import settings
from pydicom.dataset import Dataset

from pulls.dicom import PacsStatusError, PacsTimeout, Session
from pulls.dicom.completeness import Verdict, assess
from pulls.dicom.counting import count_instances
from pulls.dicom.staging import staged_sop_files
from tests.conftest import SCP_PORT, peer_for
from tests.pulls.scripted_pacs import ScriptedPacs


def _study(uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = uid
    return ds


@pytest.fixture
def one_study(dicom_data):
    study_uid, instances = sorted(dicom_data.studies.items())[4]
    return study_uid, [dicom_data.root / i.path for i in instances]


def _scripted(one_study, behaviour: str) -> ScriptedPacs:
    _, files = one_study
    return ScriptedPacs(
        files,
        behaviour=behaviour,
        destinations={settings.PACSNPULL_AE_TITLE: ("127.0.0.1", SCP_PORT)},
    )


def _move_and_assess(pacs: ScriptedPacs, study_uid: str, staging):
    with Session(peer_for(pacs.port, pacs.ae_title), services=("find", "move")) as s:
        expected = count_instances(s, study_uid=study_uid)
        result = s.move(_study(study_uid), destination=settings.PACSNPULL_AE_TITLE)
    return result, assess(
        result,
        expected=expected,
        count_received=lambda: len(staged_sop_files(staging, study_uid)),
        idle_timeout=1,
    )


def test_an_honest_pacs_is_complete(one_study, staging):
    study_uid, files = one_study
    with _scripted(one_study, "honest") as pacs:
        _, verdict = _move_and_assess(pacs, study_uid, staging)
    assert verdict.verdict is Verdict.COMPLETE
    assert verdict.received == len(files)


def test_success_with_instances_missing_is_caught(one_study, staging):
    study_uid, files = one_study
    with _scripted(one_study, "withhold") as pacs:
        result, verdict = _move_and_assess(pacs, study_uid, staging)
    assert result.status == 0x0000  # the PACS says all is well
    assert verdict.verdict is Verdict.MISSING
    assert (verdict.expected, verdict.received) == (len(files), len(files) - 2)
    assert f"only {len(files) - 2} of {len(files)} instances arrived" in verdict.message


def test_failed_sub_operations_are_reported_with_their_uids(one_study, staging):
    study_uid, files = one_study
    with _scripted(one_study, "fail_some") as pacs:
        result, verdict = _move_and_assess(pacs, study_uid, staging)
    assert result.status == 0xB000
    assert result.failed == 2
    assert len(result.failed_sop_uids) == 2
    assert verdict.verdict is Verdict.FAILED_SUBOPERATIONS
    assert "the PACS failed 2 C-STORE sub-operation(s)" in verdict.message


def test_a_stalled_pacs_hits_the_dimse_timeout(one_study):
    # The PACS answers after 30 s: a PacsTimeout is the client giving up by
    # itself, on its 2 s (with the default 60 s it would have had the answer).
    with _scripted(one_study, "stall") as pacs:
        peer = peer_for(pacs.port, pacs.ae_title, dimse_timeout=2)
        with pytest.raises(PacsTimeout) as info, Session(peer, services=("find",)) as s:
            list(s.find(_study(one_study[0])))
    assert "did not answer C-FIND within 2 s" in str(info.value)


def test_an_unknown_move_destination_on_dcmqrscp_is_0xa801_with_a_fix(dcmqrscp, one_study):
    with (
        pytest.raises(PacsStatusError) as info,
        Session(peer_for(dcmqrscp.port, "DCMQRSCP"), services=("move",)) as s,
    ):
        s.move(_study(one_study[0]), destination="NOBODY", destination_address=("10.1.2.3", 104))
    assert info.value.status == 0xA801
    assert info.value.retryable is False
    assert "does not know the move destination" in str(info.value)
    assert "register it on the PACS" in str(info.value)
    assert "register the move destination AE title 'NOBODY' at 10.1.2.3 port 104" in str(info.value)


def test_an_unknown_move_destination_on_orthanc_is_0xc000_and_explained(orthanc, one_study):
    with (
        pytest.raises(PacsStatusError) as info,
        Session(peer_for(orthanc.dicom_port, "ORTHANC"), services=("move",)) as s,
    ):
        s.move(_study(one_study[0]), destination="NOBODY")
    assert info.value.status == 0xC000
    assert info.value.retryable is False
    assert "unknown move destination" in str(info.value)


def test_a_rejected_calling_ae_title_is_named(one_study):
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    from pulls.dicom import PacsRejected, echo
    from pulls.sandbox.procs import free_port

    ae = AE(ae_title="STRICT")
    ae.add_supported_context(Verification)
    ae.require_calling_aet = ["SOMEONE"]
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False)
    try:
        with pytest.raises(PacsRejected) as info:
            echo(peer_for(port, "STRICT"))
    finally:
        server.shutdown()
    assert "Calling AE title not recognised" in str(info.value)
    assert f"register the calling AE title {settings.PACSNPULL_AE_TITLE!r}" in str(info.value)


def test_a_get_with_instances_withheld_is_caught(one_study, tmp_path):
    study_uid, files = one_study
    with _scripted(one_study, "withhold") as pacs:
        peer = peer_for(pacs.port, pacs.ae_title)
        with Session(peer, services=("find",)) as s:
            expected = count_instances(s, study_uid=study_uid)
        with Session(peer, services=("get",), staging_dir=tmp_path) as g:
            result = g.get(_study(study_uid))
    verdict = assess(
        result,
        expected=expected,
        count_received=lambda: len(staged_sop_files(tmp_path, study_uid)),
        idle_timeout=1,
    )
    assert result.status == 0x0000
    assert verdict.verdict is Verdict.MISSING
    assert verdict.received == len(files) - 2


def test_a_stalled_get_hits_the_network_timeout(one_study, tmp_path):
    # The PACS answers after 30 s: a PacsTimeout is the client giving up by
    # itself, on its 2 s (with the default 120 s it would have had the answer).
    with _scripted(one_study, "stall") as pacs:
        peer = peer_for(pacs.port, pacs.ae_title, network_timeout=2)
        with (
            pytest.raises(PacsTimeout) as info,
            Session(peer, services=("get",), staging_dir=tmp_path) as g,
        ):
            g.get(_study(one_study[0]))
    assert "did not answer C-GET within 2 s" in str(info.value)


def test_get_reports_refused_connections_and_rejections(orthanc, tmp_path):
    from pulls.dicom import PacsRejected, PacsUnavailable
    from pulls.sandbox.procs import free_port

    with (
        pytest.raises(PacsUnavailable, match="connection refused"),
        Session(peer_for(free_port(), "NOBODY"), services=("get",), staging_dir=tmp_path),
    ):
        pass
    with (
        pytest.raises(PacsRejected, match="Called AE title not recognised"),
        Session(peer_for(orthanc.dicom_port, "WRONG"), services=("get",), staging_dir=tmp_path),
    ):
        pass


def test_instances_arriving_after_the_final_response_are_waited_for(dicom_data, tmp_path):
    """A PACS that answers before its last C-STOREs land (seen in the field)."""
    import shutil
    import threading

    from pulls.dicom.results import RetrieveResult
    from pulls.dicom.staging import study_dir

    study_uid, instances = sorted(dicom_data.studies.items())[5]
    folder = study_dir(tmp_path, study_uid)
    folder.mkdir(parents=True)

    def land(items):
        for inst in items:
            shutil.copy(dicom_data.root / inst.path, folder / f"{inst.sop_instance_uid}.dcm")

    land(instances[:-2])
    late = threading.Timer(0.5, land, args=(instances[-2:],))

    counts = []

    def count_received() -> int:
        # The last two land half a second after the count at the final response
        # (the first count), however late this thread gets to run.
        counts.append(len(staged_sop_files(tmp_path, study_uid)))
        if len(counts) == 1:
            late.start()
        return counts[-1]

    said = RetrieveResult(
        status=0, completed=len(instances), failed=0, warning=0,
        failed_sop_uids=[], responses=len(instances) + 1, seconds=0.1,
    )  # fmt: skip
    verdict = assess(
        said,
        expected=len(instances),
        count_received=count_received,
        idle_timeout=60,  # a bound on the wait only: it ends when they are in
    )
    late.join()
    assert verdict.verdict is Verdict.COMPLETE
    assert verdict.late == 2
    assert "(2 after the final response)" in verdict.message


@pytest.mark.parametrize("honour", [True, False])
def test_a_cancelled_move_stops_or_the_association_is_aborted(dicom_data, staging, honour):
    from pulls.dicom import PacsAborted

    study_uid, instances = sorted(dicom_data.studies.items())[7]
    many = instances * 3  # the same instances again and again: a long transfer
    with ScriptedPacs(
        [dicom_data.root / i.path for i in many],
        behaviour="slow",
        delay=0.02,
        honour_cancel=honour,
        destinations={settings.PACSNPULL_AE_TITLE: ("127.0.0.1", SCP_PORT)},
    ) as pacs:
        if honour:
            # It sends no second instance before the C-CANCEL has come (else a
            # busy client could ask only after all were sent).
            pacs.pause = lambda number, index, event: (
                index == 1 and ScriptedPacs.until(lambda: pacs.cancel_came(event))
            )
        # Ignored, the C-CANCEL is followed by a pending response per instance:
        # the client counts them (_CANCEL_GRACE), whatever the pace.
        peer = peer_for(pacs.port, pacs.ae_title)
        with Session(peer, services=("move",)) as s:
            if honour:
                result = s.move(
                    _study(study_uid), destination="PACSNPULL", on_progress=lambda p: False
                )
                assert result.cancelled and result.status == 0xFE00
                assert result.completed == 1 < len(many)
            else:
                with pytest.raises(PacsAborted, match="ignored the C-CANCEL of the C-MOVE"):
                    s.move(_study(study_uid), destination="PACSNPULL", on_progress=lambda p: False)


def test_a_pacs_failure_response_comes_through_with_its_comment_and_element(one_study):
    """What a PACS says in a failure response (ErrorComment, OffendingElement)
    reaches the message a person reads, with the operation and the status."""
    from pulls.dicom import PacsStatusError

    study_uid, _ = one_study
    with (
        _scripted(one_study, "refuse") as pacs,
        Session(peer_for(pacs.port, pacs.ae_title), services=("find",)) as session,
        pytest.raises(PacsStatusError) as info,
    ):
        list(session.find(_study(study_uid)))
    message = str(info.value)
    assert message.startswith("C-FIND failed with status 0xA900")
    assert "offending element StudyDate (0008,0020)" in message
    assert "(PACS says: StudyDate not supported here)" in message
