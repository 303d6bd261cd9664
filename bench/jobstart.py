"""Benchmark of what a web request does with a big query file: check it, save
the job (a draft), start it.

    .venv/bin/python bench/jobstart.py [--rows 1000 20000 100000] [--runs 3]

Own Redis and SQLite under bench/results/jobstart/ (or --work); no worker, no
PACS: this is the web side only. For each size: a CSV of that many rows
naming studies is parsed (queryfiles.parse_query_file, as the upload form
does), saved as a retrieval job (services.job_create, one request) and started
(services.job_start, another request, which queues its chunks in Redis).
Median of --runs, in seconds. Target: each request well inside gunicorn's 30 s
timeout at the largest file the portal accepts (PACSNPULL_QUERY_MAX_ROWS,
100,000 rows).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from fixtures import fresh_database, owner_project_node  # bench/ is sys.path[0]
from workdir import REPO, default_work, work_dir

DEFAULT_WORK = default_work("jobstart")
WORK = work_dir("jobstart")
sys.path.insert(0, str(REPO))

from pulls.sandbox.procs import exit_on_sigterm, free_port  # noqa: E402

REDIS_PORT = free_port()
os.environ.update(
    PACSNPULL_INSTANCE_DIR=str(WORK / "instance"),
    REDIS_URL=f"redis://127.0.0.1:{REDIS_PORT}/0",
    PACSNPULL_STAGING_DIR=str(WORK / "instance" / "staging"),
    PACSNPULL_STORAGE_ROOT=str(WORK / "instance" / "storage"),
    DJANGO_SETTINGS_MODULE="portal.settings",
)


def _csv(rows: int, salt: int) -> bytes:
    lines = ["StudyInstanceUID"]
    lines += [f"1.2.826.0.1.3680043.8.498.{salt}.{n}" for n in range(1, rows + 1)]
    return ("\n".join(lines) + "\n").encode()


def one_run(rows: int, salt: int, owner, project, node) -> dict[str, float]:
    from pulls.models import JobKind
    from pulls.queries.files import parse_query_file
    from pulls.services import job_create, job_start

    data = _csv(rows, salt)
    started = time.perf_counter()
    parsed = parse_query_file(data, name="studies.csv", default_level="STUDY", max_rows=rows)
    assert not parsed.problems, parsed.problems[:3]
    checked = time.perf_counter()
    job = job_create(
        kind=JobKind.GET, owner=owner, project=project, node=node, rows=parsed.rows,
        row_numbers=parsed.numbers, source_name="studies.csv",
    )  # fmt: skip
    created = time.perf_counter()
    job_start(job=job, user=owner)
    ended = time.perf_counter()
    assert job.items.count() == rows
    return {
        "check": checked - started,
        "create": created - checked,
        "upload": created - started,
        "start": ended - created,
    }


def main() -> None:
    exit_on_sigterm()  # a terminated run stops its Redis too
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000, 20_000, 100_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="folder for the run")
    args = parser.parse_args()

    fresh_database(WORK)
    from pulls.sandbox.redis import redis_server

    redis = redis_server(WORK / "redis", port=REDIS_PORT)
    try:
        redis.start()
        owner, project, node = owner_project_node()
        print(f"{'rows':>8}  {'check':>7}  {'save':>7}  {'upload':>7}  {'start':>7}  (s, median)")
        for rows in args.rows:
            runs = [one_run(rows, n, owner, project, node) for n in range(args.runs)]
            m = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            print(
                f"{rows:8d}  {m['check']:7.2f}  {m['create']:7.2f}  {m['upload']:7.2f}  "
                f"{m['start']:7.2f}",
                flush=True,
            )
    finally:
        redis.stop()


if __name__ == "__main__":
    main()
