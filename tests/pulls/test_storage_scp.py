"""The storage SCP writes what it receives, byte for byte, inside the staging area."""

from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE, StoragePresentationContexts

from pulls.dicom.storage_scp import StorageSCP
from pulls.sandbox.procs import free_port


def _send(port: int, paths: list[Path]) -> list[int]:
    ae = AE(ae_title="SENDER")
    ae.requested_contexts = StoragePresentationContexts[:128]
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSNPULL")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(dcmread(p)).Status) for p in paths]
    finally:
        assoc.release()


def test_received_files_are_byte_identical_by_study(tmp_path, dicom_data):
    port = free_port()
    sent = dicom_data.instances[:4]
    with StorageSCP(ae_title="PACSNPULL", port=port, staging_dir=tmp_path) as scp:
        statuses = _send(port, [dicom_data.root / i.path for i in sent])
    assert statuses == [0, 0, 0, 0]
    assert scp.counters.received == 4
    for inst in sent:
        received = tmp_path / inst.study_instance_uid / f"{inst.sop_instance_uid}.dcm"
        original = dcmread(dicom_data.root / inst.path)
        copy = dcmread(received)
        assert copy.SOPInstanceUID == inst.sop_instance_uid
        assert copy.PixelData == original.PixelData
    assert not list(tmp_path.rglob(".incoming-*"))


def test_a_hostile_uid_never_leaves_the_staging_folder(tmp_path, dicom_data):
    staging = tmp_path / "staging"
    ds = dcmread(dicom_data.root / dicom_data.instances[0].path)
    ds.StudyInstanceUID = "../../escaped"
    ds.SOPInstanceUID = "../../../etc/evil"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    hostile = tmp_path / "hostile.dcm"
    ds.save_as(hostile)
    port = free_port()
    with StorageSCP(ae_title="PACSNPULL", port=port, staging_dir=staging):
        assert _send(port, [hostile]) == [0]
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != hostile]
    assert len(written) == 1
    assert written[0].is_relative_to(staging)
    assert ".." not in written[0].relative_to(staging).parts
    assert written[0].name.startswith("x")
