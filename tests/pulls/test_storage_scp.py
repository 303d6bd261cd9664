"""The storage SCP writes what it receives, byte for byte, inside the staging area."""

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE

from pulls.dicom.staging import staged_sop_files
from pulls.dicom.storage_scp import StorageSCP
from pulls.sandbox.procs import free_port, port_open
from tests.conftest import REPO, small_tmpfs, wait_for
from tests.pulls.test_engine import dataset_bytes


def _send(port: int, paths: list[Path], *, ae_title: str = "PACSNPULL") -> list[int]:
    datasets = [dcmread(p) for p in paths]
    ae = AE(ae_title="SENDER")
    for pair in {(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets}:
        ae.add_requested_context(*pair)
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
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
        assert dataset_bytes(received) == dataset_bytes(dicom_data.root / inst.path)
        meta = dcmread(received).file_meta
        assert meta.MediaStorageSOPInstanceUID == inst.sop_instance_uid
        assert meta.SourceApplicationEntityTitle == "SENDER"
    assert not [p for p in tmp_path.rglob("*.part")]


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # hostile on purpose
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
    # The instance, and the folder's index of what the SCP wrote (see staging).
    assert sorted(p.name[0] for p in written) == [".", "x"]
    for path in written:
        assert path.is_relative_to(staging)
        assert ".." not in path.relative_to(staging).parts
        assert path.parent.name.startswith("x")


def test_it_rejects_an_association_for_another_ae_title(tmp_path):
    port = free_port()
    with StorageSCP(ae_title="PACSNPULL", port=port, staging_dir=tmp_path):
        ae = AE(ae_title="SENDER")
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate("127.0.0.1", port, ae_title="SOMEONEELSE")
        assert assoc.is_rejected
        assert assoc.acceptor.primitive.diagnostic == 7  # called AE title not recognised


def test_it_answers_echo(tmp_path):
    from pulls.dicom import Peer, echo

    port = free_port()
    with StorageSCP(ae_title="PACSNPULL", port=port, staging_dir=tmp_path):
        assert echo(Peer("127.0.0.1", port, "PACSNPULL", "PACS")).status == 0


def test_concurrent_associations_each_land_complete(tmp_path, dicom_data):
    port = free_port()
    groups = [list(items) for _, items in sorted(dicom_data.studies.items())[:4]]
    results: list[list[int]] = []
    with StorageSCP(ae_title="PACSNPULL", port=port, staging_dir=tmp_path) as scp:
        threads = [
            threading.Thread(
                target=lambda g=g: results.append(
                    _send(port, [dicom_data.root / i.path for i in g])
                )
            )
            for g in groups
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert sorted(map(len, results)) == sorted(map(len, groups))
    assert all(s == 0 for r in results for s in r)
    assert scp.counters.received == sum(map(len, groups))
    for group in groups:
        files = staged_sop_files(tmp_path, group[0].study_instance_uid)
        assert {f.stem for f in files} == {i.sop_instance_uid for i in group}


@pytest.fixture
def tiny_disk(tmp_path):
    """A 48 KiB tmpfs: a real full disk."""
    with small_tmpfs(tmp_path / "tiny", "48k") as mount_point:
        yield mount_point


def test_a_full_disk_is_answered_with_0xa700_and_leaves_no_partial_file(tiny_disk, sandbox):
    from pulls.sandbox.synthetic import generate

    big = generate(sandbox / "big", patients=1, studies=1, series=1, instances=12, seed=9, size=64)
    port = free_port()
    files = [big.root / i.path for i in big.instances]
    with StorageSCP(ae_title="PACSNPULL", port=port, staging_dir=tiny_disk) as scp:
        statuses = _send(port, files)
        assert 0xA700 in statuses
        stored = statuses.index(0xA700)
        assert set(statuses[:stored]) == {0} and set(statuses[stored:]) == {0xA700}
        on_disk = staged_sop_files(tiny_disk, big.instances[0].study_instance_uid)
        assert len(on_disk) == stored
        for path in on_disk:  # every file that exists is whole
            original = big.root / next(
                i.path for i in big.instances if i.sop_instance_uid == path.stem
            )
            assert dataset_bytes(path) == dataset_bytes(original)
        assert not list(tiny_disk.rglob("*.part"))
        # Space freed: the SCP works again, it did not crash.
        for path in on_disk:
            path.unlink()
        assert _send(port, files[:1]) == [0]
        assert scp.counters.failed == len(statuses) - stored


def storescp_env(tmp_path: Path, port: int) -> dict[str, str]:
    """The environment of a ``manage.py storescp`` of a test's own."""
    return dict(
        os.environ,
        PACSNPULL_INSTANCE_DIR=str(tmp_path),
        PACSNPULL_SCP_PORT=str(port),
        PACSNPULL_STAGING_DIR=str(tmp_path / "staging"),
    )


def test_the_storescp_command_listens_and_stops_cleanly_on_sigterm(tmp_path, dicom_data):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "storescp"],
        cwd=REPO,
        env=storescp_env(tmp_path, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: port_open(port), timeout=30, what="the storage SCP to listen")
        assert _send(port, [dicom_data.root / dicom_data.instances[0].path]) == [0]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "storage SCP stopped (1 received, 0 failed)" in out
    assert not port_open(port)
