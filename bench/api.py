"""Benchmark of the REST API: making a big job by JSON, and reading a huge one.

    .venv/bin/python bench/api.py [--rows 10000] [--big-rows 100000] [--runs 5] [--work DIR]

SQLite under bench/results/api/ (or --work), calls made in process with a
Bearer token as a script sends it (Django's test client: the whole request,
authentication, rate count (no Redis: not counted), parsing, checks and the
database; no network):

- POST /api/v1/jobs/ of a find job of --rows JSON rows (PatientID and the
  study return keys), median of --runs;
- on a find job of --big-rows rows with a match each: GET of the job
  (progress), of a page of matches (first, a later one, filtered, sorted) and
  of a page of failed rows; p95 over ten rounds.

Targets: the job made in < 3 s; p95 < 200 ms for progress and a page of matches.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from workdir import REPO, work_dir  # bench/ is sys.path[0]

WORK = work_dir("api")
sys.path.insert(0, str(REPO))
os.environ.update(
    PACSNPULL_INSTANCE_DIR=str(WORK / "instance"),
    DJANGO_SETTINGS_MODULE="portal.settings",
    REDIS_URL="redis://127.0.0.1:9/0",  # nothing there: the rate is not counted
)

from fixtures import big_find_job, fresh_database, owner_project_node  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--big-rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--work", type=Path)  # read by work_dir()
    args = parser.parse_args()

    fresh_database(WORK)
    from django.conf import settings
    from django.test import Client

    from pulls.api.tokens import token_create
    from pulls.sandbox.synthetic import generate

    settings.ALLOWED_HOSTS = ["testserver", *settings.ALLOWED_HOSTS]
    owner, project, node = owner_project_node()
    _, token = token_create(user=owner, name="bench", read_only=False)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    body = json.dumps(
        {
            "kind": "find", "project": str(project.code), "node": str(node.code),
            "rows": [{"QueryRetrieveLevel": "STUDY", "PatientID": f"P{n:06d}",
                      "StudyDate": "20200101-20241231", "StudyInstanceUID": "",
                      "StudyDescription": "", "ModalitiesInStudy": ""}
                     for n in range(args.rows)],
        }
    )  # fmt: skip
    made = []
    for _ in range(args.runs):
        started = time.perf_counter()
        answer = client.post("/api/v1/jobs/", body, content_type="application/json")
        made.append(time.perf_counter() - started)
        assert answer.status_code == 201, answer.content[:500]
        assert answer.json()["rows"] == args.rows
    print(f"POST /api/v1/jobs/ of {args.rows:,} JSON rows: median {statistics.median(made):.2f} s"
          f"  runs {[round(x, 2) for x in made]}  (target < 3 s)")  # fmt: skip

    with tempfile.TemporaryDirectory() as folder:
        manifest = generate(Path(folder), patients=20, studies=2, series=1, instances=1)
    job = big_find_job(node, owner, project, manifest, args.big_rows)
    base = f"/api/v1/jobs/{job.code}"
    urls = {
        "progress": [f"{base}/"],
        "matches": [
            f"{base}/matches/",
            f"{base}/matches/?page=500",
            f"{base}/matches/?modality=CT&sort=-date&page=20",
            f"{base}/matches/?date_from=2020-01-01&date_to=2021-12-31&sort=patient",
            f"{base}/matches/?description=THORAX",
        ],
        "rows": [f"{base}/rows/?status=failed", f"{base}/rows/?page=900"],
    }
    timings: dict[str, list[float]] = {kind: [] for kind in urls}
    for _ in range(10):
        for kind, group in urls.items():
            for url in group:
                started = time.perf_counter()
                answer = client.get(url)
                timings[kind].append((time.perf_counter() - started) * 1000)
                assert answer.status_code == 200, (url, answer.content[:300])
    for kind, ms in timings.items():
        ms.sort()
        print(f"{kind:9s} on a {args.big_rows:,}-row job: p50 {statistics.median(ms):.0f} ms, "
              f"p95 {ms[int(len(ms) * 0.95) - 1]:.0f} ms  (target p95 < 200 ms)")  # fmt: skip


if __name__ == "__main__":
    main()
