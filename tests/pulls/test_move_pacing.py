"""A C-MOVE's pending responses are read in batches (pulls.dicom.pacing)."""

import pytest
from django.conf import settings
from pydicom.dataset import Dataset

from pulls.dicom import Session
from pulls.dicom.pacing import MAX_WAIT, ResponsePacing
from pulls.dicom.staging import staged_sop_files
from pulls.sandbox.synthetic import generate
from tests.conftest import SCP_PORT, manifest_files, orthanc_holding, peer_for
from tests.pulls.scripted_pacs import ScriptedPacs

INSTANCES = 30


def _study(uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = uid
    return ds


@pytest.fixture(scope="module")
def big_study(sandbox):
    """An Orthanc of its own holding one study of 30 instances (the shared one's
    studies have 6, and other tests count what it holds)."""
    data = generate(
        sandbox / "pacing-data", patients=1, studies=1, series=1, instances=INSTANCES, seed=11
    )
    with orthanc_holding(sandbox / "pacing-orthanc", manifest_files(data)) as pacs:
        (study_uid,) = data.studies
        yield peer_for(pacs.dicom_port, "ORTHANC"), study_uid, data.instances


def test_a_move_reads_its_pending_responses_in_batches_and_misses_none(big_study, staging):
    """Paced reads miss no response: each is counted, in order, and the
    association goes on serving. How many reads it took (about log2(30) + 2
    here, against 30 read as they come) depends on how the PACS's responses
    and the worker's waits fall on a given machine: the benchmarks measure it
    (the CPU and context switches of a C-MOVE job), the test does not."""
    peer, study_uid, instances = big_study
    seen = []
    with Session(peer, services=("move",)) as s:
        result = s.move(
            _study(study_uid),
            destination=settings.PACSNPULL_AE_TITLE,
            on_progress=lambda progress: seen.append(progress.completed),
        )
        again = s.move(_study(study_uid), destination=settings.PACSNPULL_AE_TITLE)
    assert (result.status, result.completed, result.failed) == (0, INSTANCES, 0)
    # Orthanc answers each sub-operation but the last with a pending response.
    assert result.responses == INSTANCES
    # Each response seen, in order (the last call is the final one's).
    assert seen == [*range(1, INSTANCES), INSTANCES]
    assert (again.status, again.completed, again.responses) == (0, INSTANCES, INSTANCES)
    received = {p.stem for p in staged_sop_files(staging, study_uid)}
    assert received == {i.sop_instance_uid for i in instances}


def test_a_move_cancelled_midway_stops_although_its_responses_are_paced(dicom_data, staging):
    # The PACS sends no fifth instance before the C-CANCEL has come (a minute at
    # most): the paced reads must still see the fourth response and cancel then.
    study_uid, instances = sorted(dicom_data.studies.items())[5]
    pacs = ScriptedPacs(
        [dicom_data.root / i.path for i in instances] * 2,  # 12 sub-operations
        behaviour="honest",
        destinations={settings.PACSNPULL_AE_TITLE: ("127.0.0.1", SCP_PORT)},
    )
    pacs.pause = lambda number, index, event: (
        number == 1 and index == 4 and ScriptedPacs.until(lambda: pacs.cancel_came(event))
    )
    with pacs, Session(peer_for(pacs.port, pacs.ae_title), services=("move",)) as s:
        result = s.move(
            _study(study_uid),
            destination=settings.PACSNPULL_AE_TITLE,
            on_progress=lambda progress: progress.completed < 4,
        )
        # The association goes on serving: the cancelled move's responses were all read.
        again = s.move(_study(study_uid), destination=settings.PACSNPULL_AE_TITLE)
    assert result.cancelled and result.status == 0xFE00
    assert result.completed == 4
    assert again.completed == len(instances) * 2


def test_the_wait_is_half_the_time_the_remaining_sub_operations_take():
    pacing = ResponsePacing()
    assert pacing.wait(10.0, completed=1, remaining=29) == 0  # the first: no pace yet
    assert pacing.wait(10.004, completed=3, remaining=27) == pytest.approx(27 * 0.002 / 2)
    assert pacing.wait(10.010, completed=6, remaining=4) == pytest.approx(4 * 0.002 / 2)
    assert pacing.wait(10.012, completed=7, remaining=1) == 0  # the final is not waited out
    assert pacing.wait(10.5, completed=8, remaining=200) == MAX_WAIT  # at most this long


@pytest.mark.parametrize(
    ("completed", "remaining"),
    [(3, None), (1, 20)],
    ids=["no remaining count", "no sub-operation done since the first response"],
)
def test_without_a_pace_to_go_by_the_next_response_is_read_at_once(completed, remaining):
    pacing = ResponsePacing()
    pacing.wait(1.0, completed=1, remaining=20)
    assert pacing.wait(1.01, completed=completed, remaining=remaining) == 0
