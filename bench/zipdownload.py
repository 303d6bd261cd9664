"""Benchmark of a project's files downloaded as a streamed ZIP from the running portal.

    .venv/bin/python bench/zipdownload.py [--instances 3200] [--size 256] [--runs 5] [--work DIR]

A project holding --instances synthetic instances (pulls.sandbox.synthetic,
--size x --size pixels, 16 bits) is downloaded as ZIP over HTTP from gunicorn
started as `make run` starts it (2 workers, 4 threads), by curl into
/dev/null, alternating with `zip -0 -r -q -` of the same folder into
/dev/null; the median of --runs each. The gunicorn workers' resident memory
is sampled every 20 ms: its growth over the first download's end (after
imports and first-use caches) to the highest point of the later ones.

Targets: the portal at least 0.8x zip's speed (zip's median time over the
portal's); memory flat (growth within 20 MB).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from workdir import REPO, work_dir  # bench/ is sys.path[0]

WORK = work_dir("zipdownload")
sys.path.insert(0, str(REPO))
os.environ.update(
    PACSNPULL_INSTANCE_DIR=str(WORK / "instance"),
    DJANGO_SETTINGS_MODULE="portal.settings",
    PACSNPULL_DEMO_PACS="false",
)

from fixtures import fresh_database, owner_project_node, project_with_files  # noqa: E402

from pulls.sandbox.procs import free_port, port_open  # noqa: E402


def _rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total = max(total, int(line.split()[1]) * 1024)
        except FileNotFoundError:
            pass
    return total


class Sampler(threading.Thread):
    """The highest resident memory of any gunicorn worker, sampled."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids, self.peak, self.stop = pids, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, _rss(self.pids))
            time.sleep(0.02)


def _children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in found.read_text().split()] if found.exists() else []


def _timed(command: list[str], cwd: Path) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.PIPE)
    return time.perf_counter() - started, int(done.stdout or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=3200)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--work", type=Path)  # read by work_dir()
    args = parser.parse_args()

    fresh_database(WORK)
    from django.test import Client

    owner, project, _ = owner_project_node()
    made = project_with_files(project, args.instances, size=args.size)
    total = sum(i.size for i in made.instances)
    client = Client()
    client.force_login(owner)
    session = client.cookies["sessionid"].value

    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "portal.wsgi", "--bind",
         f"127.0.0.1:{port}", "--workers", "2", "--threads", "4", "--log-level", "warning"],
        cwd=REPO, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not port_open(port) and time.monotonic() < deadline:
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port}/projects/{project.slug}/files.zip"
        curl = ["curl", "-sS", "-f", "-o", "/dev/null", "-w", "%{size_download}",
                "-b", f"sessionid={session}", url]  # fmt: skip
        zip_cmd = ["sh", "-c", "zip -0 -r -q - . | wc -c"]
        workers = _children(server.pid)
        _, size = _timed(curl, REPO)  # warm-up: imports, first-use caches
        baseline = _rss(workers)
        sampler = Sampler(workers)
        sampler.start()
        portal, zipped = [], []
        for _ in range(args.runs):
            seconds, got = _timed(curl, REPO)
            assert got == size, (got, size)
            portal.append(seconds)
            zipped.append(_timed(zip_cmd, project.storage_dir)[0])
        sampler.stop.set()
        sampler.join()
    finally:
        server.terminate()
        server.wait(timeout=30)
    p, z = statistics.median(portal), statistics.median(zipped)
    growth = (sampler.peak - baseline) / 1e6
    print(f"{len(made.instances)} instances, {total / 1e6:.0f} MB, ZIP {size / 1e6:.0f} MB")
    print(f"portal ZIP over HTTP: median {p:.2f} s ({total / p / 1e6:.0f} MB/s)  runs {portal}")
    print(f"zip -0 -r:            median {z:.2f} s ({total / z / 1e6:.0f} MB/s)  runs {zipped}")
    print(f"ratio (zip / portal): {z / p:.2f}  (target >= 0.8)")
    print(f"worker RSS: {baseline / 1e6:.0f} MB after the first download, growth {growth:+.1f} MB")
    shutil.rmtree(project.storage_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
