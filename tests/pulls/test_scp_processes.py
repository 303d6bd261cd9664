"""The storage SCP in several processes: associations spread, a dead process is replaced."""

import contextlib
import os
import signal
import subprocess
import sys

import pytest
from pynetdicom import AE

from pulls.sandbox.procs import free_port, port_open
from tests.conftest import REPO, wait_for
from tests.pulls.test_storage_scp import _send, storescp_env


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return [int(child) for child in fh.read().split()]


def _owner_of_connection_from(local_port: int, candidates: list[int]) -> int:
    """Which of ``candidates`` holds the server side of the connection from ``local_port``."""
    inodes = set()
    with open("/proc/net/tcp") as fh:
        for line in fh.readlines()[1:]:
            fields = line.split()
            if int(fields[2].split(":")[1], 16) == local_port:  # remote address: the client
                inodes.add(fields[9])
    for pid in candidates:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return pid
    raise AssertionError(f"no process holds the connection from port {local_port}")


@pytest.fixture
def scp_processes(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "storescp", "--processes", "2"],
        cwd=REPO, env=storescp_env(tmp_path, port), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: port_open(port), timeout=30, what="the storage SCP to listen")
        wait_for(lambda: len(_children(proc.pid)) == 2, timeout=60, what="two SCP processes")
        yield proc, port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # by its process group: the parent's and children's
        proc.wait()


def test_two_associations_at_once_are_served_by_two_processes(scp_processes):
    """Both processes serve on the one port, an association each at the same
    time. Which process the kernel hands a connection to is its choice (an
    idle sibling is only favoured, storage_scp._BUSY_DEFERS; how well that
    spreads the load is for the benchmarks): so the process that took the
    first association is stopped while the second comes, and only the other
    one can take it. Both are then served side by side."""
    proc, port = scp_processes
    children = _children(proc.pid)
    assert len(children) == 2
    ae = AE(ae_title="SENDER")
    ae.add_requested_context("1.2.840.10008.1.1")
    first = ae.associate("127.0.0.1", port, ae_title="PACSNPULL")
    second = None
    try:
        assert first.is_established
        busy = _owner_of_connection_from(first.local["port"], children)
        os.kill(busy, signal.SIGSTOP)
        try:
            second = ae.associate("127.0.0.1", port, ae_title="PACSNPULL")
            assert second.is_established
        finally:
            os.kill(busy, signal.SIGCONT)
        other = _owner_of_connection_from(second.local["port"], children)
        assert {busy, other} == set(children)
        assert first.send_c_echo().Status == 0 and second.send_c_echo().Status == 0
        assert first.is_established and second.is_established  # at the same time
    finally:
        first.release()
        if second is not None:
            second.release()


def test_a_process_that_dies_is_replaced_and_sigterm_ends_them_all(scp_processes, dicom_data):
    proc, port = scp_processes
    victim, survivor = _children(proc.pid)
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: len(_children(proc.pid)) == 2 and victim not in _children(proc.pid),
        timeout=60,
        what="a replacement process",
    )
    instances = dicom_data.instances[:3]
    for inst in instances:
        assert _send(port, [dicom_data.root / inst.path]) == [0]
    children = _children(proc.pid)

    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)

    assert proc.returncode == 0
    assert "storage SCP stopped (3 received, 0 failed)" in out
    assert "starting another" in out
    for pid in children:
        assert not os.path.exists(f"/proc/{pid}")


def test_a_killed_supervisor_leaves_no_process_holding_the_port(scp_processes):
    proc, port = scp_processes
    children = _children(proc.pid)

    proc.kill()  # SIGKILL: it cannot stop them itself
    proc.wait()

    wait_for(
        lambda: not any(_alive(pid) for pid in children),
        timeout=60,
        what="the SCP processes to end with their supervisor",
    )
    # A process shows as ended (its main thread a zombie) a moment before its
    # last thread lets go of the listening socket.
    wait_for(lambda: not port_open(port), timeout=60, what="the port to be free")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone (reaped meanwhile)
        return False


def test_processes_that_cannot_start_end_the_scp_with_the_reason(tmp_path):
    env = storescp_env(tmp_path, free_port())
    staging = tmp_path / "staging-that-cannot-be"
    staging.mkdir()
    (staging / ".incoming").write_text("a file where the SCP needs a folder")
    env["PACSNPULL_STAGING_DIR"] = str(staging)
    proc = subprocess.run(
        [sys.executable, "manage.py", "storescp", "--processes", "2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "ended 3 times in a row within 5 s of starting" in proc.stderr
    assert "storage SCP process failed" in proc.stderr  # the log says why
    assert "FileExistsError" in proc.stderr
