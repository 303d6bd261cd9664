"""The DICOM engine against Orthanc, DCMTK dcmqrscp and pynetdicom's qrscp."""

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pulls.dicom import Session
from pulls.dicom.completeness import Verdict, assess
from pulls.dicom.counting import _study_count, count_instances, count_studies
from pulls.dicom.encoding import encode_identifier
from pulls.dicom.headers import scan_tags
from pulls.dicom.staging import staged_sop_files
from tests.conftest import peer_for


def _q(level: str, **keys) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


def dataset_bytes(path: Path) -> bytes:
    """The data set of a DICOM file without preamble and file meta information."""
    data = path.read_bytes()
    assert data[128:132] == b"DICM"
    group_length = int.from_bytes(data[140:144], "little")  # (0002,0000) UL value
    return data[144 + group_length :]


@pytest.mark.parametrize("model", ["S", "P"])
def test_find_at_each_level_returns_what_the_pacs_holds(any_pacs, dicom_data, model):
    patient_id = sorted(dicom_data.patients)[0]
    instances = dicom_data.patients[patient_id]
    study_uid = instances[0].study_instance_uid
    series_uid = instances[0].series_instance_uid
    with Session(any_pacs, services=("find",)) as s:
        patients = (
            {
                str(m.PatientID)
                for m in s.find(_q("PATIENT", PatientID=patient_id, PatientName=""), model="P")
            }
            if model == "P"
            else {patient_id}
        )
        studies = {
            str(m.StudyInstanceUID)
            for m in s.find(_q("STUDY", PatientID=patient_id, StudyInstanceUID=""), model=model)
        }
        series = {
            str(m.SeriesInstanceUID)
            for m in s.find(
                _q(
                    "SERIES", PatientID=patient_id, StudyInstanceUID=study_uid, SeriesInstanceUID=""
                ),
                model=model,
            )
        }
        images = {
            str(m.SOPInstanceUID)
            for m in s.find(
                _q(
                    "IMAGE", PatientID=patient_id, StudyInstanceUID=study_uid,
                    SeriesInstanceUID=series_uid, SOPInstanceUID="",
                ),
                model=model,
            )
        }  # fmt: skip
    assert patients == {patient_id}
    assert studies == {i.study_instance_uid for i in instances}
    assert series == {i.series_instance_uid for i in instances if i.study_instance_uid == study_uid}
    assert images == {i.sop_instance_uid for i in dicom_data.series[series_uid]}


def test_expected_counts_come_from_the_pacs(any_pacs, dicom_data):
    study_uid, instances = next(iter(dicom_data.studies.items()))
    series_uid = instances[0].series_instance_uid
    with Session(any_pacs, services=("find",)) as s:
        assert count_instances(s, study_uid=study_uid) == len(instances)
        assert count_instances(s, study_uid=study_uid, series_uid=series_uid) == len(
            dicom_data.series[series_uid]
        )


def test_counts_of_several_studies_with_one_query_are_the_pacs_counts(any_pacs, dicom_data):
    studies = sorted(dicom_data.studies)[:4]
    with Session(any_pacs, services=("find",)) as s:
        counts = count_studies(s, studies)
    # A PACS that leaves the count empty (dcmqrscp) or ignores UID lists gives
    # fewer: those studies are counted one by one. What it gives is right.
    assert {uid: c.instances for uid, c in counts.items()} == {
        uid: len(dicom_data.studies[uid]) for uid in counts
    }
    # The SOP classes too, where it names them (a C-GET proposes those).
    for uid, count in counts.items():
        if count.sop_classes is not None:
            assert set(count.sop_classes) == {i.sop_class_uid for i in dicom_data.studies[uid]}
    if any_pacs.called_ae == "ORTHANC":
        assert set(counts) == set(studies)
        assert all(count.sop_classes for count in counts.values())


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_a_count_match_without_the_classes_is_read_from_its_bytes(ts):
    """A C-MOVE's count does not ask for SOPClassesInStudy: its matches end
    without it, and are still read from their bytes (they went to pydicom,
    which cost more than the rest of counting)."""
    match = _q("STUDY", StudyInstanceUID="1.2.3.4", NumberOfStudyRelatedInstances="30")
    data = encode_identifier(match, ts)
    tags = {0x0020000D, 0x00201208, 0x00080062}
    implicit = ts.is_implicit_VR
    # A head may go on past its end; a whole match does not.
    assert scan_tags(data, tags, implicit=implicit) is None
    assert scan_tags(data, tags, implicit=implicit, whole=True) == {
        0x0020000D: b"1.2.3.4",
        0x00201208: b"30",
    }
    assert scan_tags(data[:-2], tags, implicit=implicit, whole=True) is None  # cut short
    assert _study_count(data, ts) == ("1.2.3.4", 30, None)


def _assert_received_exactly(staging: Path, dicom_data, expected_instances) -> None:
    study_uid = expected_instances[0].study_instance_uid
    received = {p.stem: p for p in staged_sop_files(staging, study_uid)}
    assert set(received) == {i.sop_instance_uid for i in expected_instances}
    for inst in expected_instances:
        got, loaded = received[inst.sop_instance_uid], dicom_data.root / inst.path
        if dcmread(got).file_meta.TransferSyntaxUID == dcmread(loaded).file_meta.TransferSyntaxUID:
            assert dataset_bytes(got) == dataset_bytes(loaded)
        else:
            # The PACS chose another (lossless) transfer syntax as acceptor of
            # our C-GET contexts (pynetdicom's qrscp prefers implicit VR): the
            # bytes differ, every value must not.
            assert dcmread(got).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
            assert dcmread(got) == dcmread(loaded)


def test_move_of_a_study_brings_every_instance_byte_identical(any_pacs, dicom_data, staging):
    study_uid, instances = sorted(dicom_data.studies.items())[1]
    progress = []
    with Session(any_pacs, services=("find", "move")) as s:
        expected = count_instances(s, study_uid=study_uid)
        result = s.move(
            _q("STUDY", StudyInstanceUID=study_uid),
            destination="PACSNPULL",
            on_progress=progress.append,
        )
    verdict = assess(
        result,
        expected=expected,
        count_received=lambda: len(staged_sop_files(staging, study_uid)),
    )
    assert verdict.verdict is Verdict.COMPLETE, verdict.message
    assert (result.status, result.completed, result.failed) == (0, len(instances), 0)
    assert progress[-1].completed == len(instances)
    _assert_received_exactly(staging, dicom_data, instances)


def test_move_of_a_series_brings_only_that_series(any_pacs, dicom_data, staging):
    series_uid, instances = sorted(dicom_data.series.items())[2]
    study_uid = instances[0].study_instance_uid
    with Session(any_pacs, services=("move",)) as s:
        result = s.move(
            _q("SERIES", StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid),
            destination="PACSNPULL",
        )
    assert result.completed == len(instances)
    _assert_received_exactly(staging, dicom_data, instances)


def test_a_get_proposing_only_named_classes_gets_those_and_proposes_more_when_asked(
    orthanc, dicom_data, tmp_path
):
    """The association proposes only the storage classes named (what the PACS
    said a study holds): Orthanc then sends those, and fails a C-GET of a study
    of another class (why a wrong list is retried proposing every class).
    ``propose_storage`` opens a new association proposing the classes asked."""
    from pulls.dicom import PacsStatusError

    peer = peer_for(orthanc.dicom_port, orthanc.aet)
    by_class = {}
    for uid, instances in sorted(dicom_data.studies.items()):
        by_class.setdefault(instances[0].sop_class_uid, (uid, instances))
    (ct, (ct_study, ct_instances)), (mr, (mr_study, mr_instances)) = [
        (c, by_class[c]) for c in ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4")
    ]
    with Session(peer, services=("find", "get"), staging_dir=tmp_path, storage_classes=[ct]) as g:
        first = g.conn
        storage = {
            (sop, ts) for sop, ts in g.conn.accepted.contexts.values() if "5.1.4.1.2" not in sop
        }
        # CT alone, in a context per transfer syntax (those Orthanc accepts).
        assert {sop for sop, _ in storage} == {ct}
        assert len(storage) > 10
        assert g.get(_q("STUDY", StudyInstanceUID=ct_study)).completed == len(ct_instances)
        with pytest.raises(PacsStatusError) as info:
            g.get(_q("STUDY", StudyInstanceUID=mr_study))
        assert info.value.status == 0xC000
        g.propose_storage([ct])  # proposed already: the same association
        assert g.conn is first
        g.propose_storage([mr])
        assert g.conn is not first
        assert g.storage_classes == tuple(sorted([ct, mr]))
        assert g.get(_q("STUDY", StudyInstanceUID=mr_study)).completed == len(mr_instances)
        g.propose_storage(None)  # every standard class
        assert g.storage_classes is None
        assert len(g.conn.accepted.contexts) > 100
    _assert_received_exactly(tmp_path, dicom_data, ct_instances)
    _assert_received_exactly(tmp_path, dicom_data, mr_instances)


def test_a_named_class_list_that_is_not_uids_is_not_proposed():
    from pulls.dicom.proposals import storage_classes_named

    assert storage_classes_named(["1.2.840.10008.5.1.4.1.1.2", ""]) == (
        "1.2.840.10008.5.1.4.1.1.2",
    )
    assert storage_classes_named(["1.2.3", "CT Image Storage"]) is None  # every class instead
    assert storage_classes_named(None) is None


def test_classes_that_do_not_fit_in_one_association_are_not_proposed_together():
    """A class takes a context per transfer syntax (19 for images, 4 without
    pixel data): six image classes fit beside the query/retrieve models of a
    C-GET association, seven do not, and a session keeps what fits."""
    from pulls.dicom.proposals import (
        TooManyClasses,
        association_request,
        storage_classes_fitting,
        storage_fits,
    )

    images = [f"1.2.840.10008.5.1.4.1.1.{n}" for n in (1, 2, 4, 6.1, 7, 12.1, 20)]
    reports = [f"1.2.840.10008.5.1.4.1.1.88.{n}" for n in (11, 22, 33, 59)]
    services = ("find", "get")
    assert storage_fits(services, images[:6])
    assert storage_fits(services, images[:6] + reports[:2])
    assert not storage_fits(services, images)
    assert storage_classes_fitting(services, tuple(images)) == tuple(images[:6])
    with pytest.raises(TooManyClasses):
        association_request("A", "B", services, tuple(images))


def test_get_of_a_study_receives_every_instance_on_the_association(any_pacs, dicom_data, tmp_path):
    study_uid, instances = sorted(dicom_data.studies.items())[3]
    progress = []
    with Session(any_pacs, services=("find",)) as s:
        expected = count_instances(s, study_uid=study_uid)
    with Session(any_pacs, services=("get",), staging_dir=tmp_path) as g:
        result = g.get(_q("STUDY", StudyInstanceUID=study_uid), on_progress=progress.append)
        # one association serves several C-GETs
        again = g.get(_q("STUDY", StudyInstanceUID=study_uid))
    verdict = assess(
        result, expected=expected, count_received=lambda: len(staged_sop_files(tmp_path, study_uid))
    )
    assert verdict.verdict is Verdict.COMPLETE, verdict.message
    assert (result.status, result.completed, again.completed) == (0, len(instances), len(instances))
    assert progress[-1].completed == len(instances)
    assert g.counters.received == 2 * len(instances)
    _assert_received_exactly(tmp_path, dicom_data, instances)
    assert not list((tmp_path / ".incoming").iterdir())
