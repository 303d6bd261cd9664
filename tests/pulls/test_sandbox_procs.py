"""The helpers that start servers for the tests and the benchmarks."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from pulls.sandbox.procs import free_port, port_open
from tests.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]


def test_a_script_terminated_with_sigterm_stops_the_servers_it_started(tmp_path):
    """The benchmarks call exit_on_sigterm: a run stopped with SIGTERM (a
    timeout, a CI job cancelled) leaves no server of its own running."""
    port = free_port()
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        from pulls.sandbox.procs import Server, exit_on_sigterm
        exit_on_sigterm()
        server = Server(
            "http", [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "{port}"],
            ports=[{port}], log_path=Path({str(tmp_path / "http.log")!r}),
        ).start()
        try:
            print(server.pid, flush=True)
            time.sleep(60)
        finally:
            server.stop()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    server_pid = int(proc.stdout.readline())
    try:
        assert port_open(port)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 128 + signal.SIGTERM
        wait_for(
            lambda: not os.path.exists(f"/proc/{server_pid}"), timeout=60, what="the server to end"
        )
        assert not port_open(port)
    finally:  # when it failed: nothing of the test's is left running
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if os.path.exists(f"/proc/{server_pid}"):
            os.killpg(server_pid, signal.SIGKILL)
