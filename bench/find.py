"""Benchmark of batch find jobs through the whole pipeline.

    .venv/bin/python bench/find.py [--rows 10000] [--page-rows 100000]

In one run, with its own Orthanc, Redis, Celery worker and SQLite database
(under bench/results/find/):

1. a --rows find job: CSV file -> validation -> job and items in the database
   -> Celery worker (2 processes) -> C-FIND -> matches in the database, against
   a raw loop of the same queries on one pynetdicom association (and on one
   association of our own client). Target: pipeline >= 0.8x the raw rate.
2. validating a --page-rows file: seconds and peak memory (target < 10 s,
   < 300 MB), in a fresh process.
3. the job page of a --page-rows job: p95 over 60 requests of the pages people
   open (first page, a later page, a status filter, the matches with a filter
   and a sort). Target p95 < 300 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "bench" / "results" / "find"
sys.path.insert(0, str(REPO))

# The portal's settings read the environment once: point them at the bench's own
# instance folder and Redis before Django starts.
from pulls.sandbox.procs import exit_on_sigterm, free_port  # noqa: E402

REDIS_PORT = free_port()
os.environ.update(
    PACSNPULL_INSTANCE_DIR=str(WORK / "instance"),
    REDIS_URL=f"redis://127.0.0.1:{REDIS_PORT}/0",
    DJANGO_SETTINGS_MODULE="portal.settings",
)


def _csv(rows: list[dict[str, str]]) -> bytes:
    keys = list(rows[0])
    lines = [",".join(keys)] + [",".join(r[k] for k in keys) for r in rows]
    return ("\n".join(lines) + "\n").encode()


def _queries(manifest, count: int) -> list[dict[str, str]]:
    """Unique STUDY rows: real patients and accession numbers, and misses."""
    import datetime as dt

    patients = sorted(manifest.patients)
    rows = []
    for n in range(count):
        pid = patients[n % len(patients)] if n % 2 == 0 else f"MISS{n:07d}"
        start = dt.date(1990, 1, 1) + dt.timedelta(days=n)  # unique per row
        end = start + dt.timedelta(days=3650)
        rows.append(
            {
                "QueryRetrieveLevel": "STUDY",
                "PatientID": pid,
                "StudyDate": f"{start:%Y%m%d}-{end:%Y%m%d}" if n >= len(patients) else "",
                "StudyInstanceUID": "",
                "AccessionNumber": "",
                "StudyDescription": "",
            }
        )
    return rows


def bench_pipeline(node, owner, project, rows: list[dict[str, str]]) -> dict[str, float]:
    from pulls.models import Job, JobKind, JobStatus
    from pulls.queries.files import parse_query_file
    from pulls.services import job_create, job_start

    started = time.perf_counter()
    parsed = parse_query_file(_csv(rows), name="bench.csv", max_rows=len(rows) + 1)
    assert parsed.ok, parsed.problems[:3]
    job = job_create(
        kind=JobKind.FIND, owner=owner, project=project, node=node,
        rows=parsed.rows, row_numbers=parsed.numbers, title="bench",
    )  # fmt: skip
    job_start(job=job, user=owner)
    while Job.objects.get(pk=job.pk).status not in (JobStatus.DONE, JobStatus.FAILED):
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    job.refresh_from_db()
    assert job.items_done == len(rows), (job.items_done, job.items_failed)
    return {"rows_per_s": len(rows) / seconds, "seconds": seconds, "matches": job.matches}


def bench_raw(peer, rows: list[dict[str, str]]) -> dict[str, float]:
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

    from pulls.dicom import Session
    from pulls.dicom.identifiers import identifier_from_row

    identifiers = [identifier_from_row(r) for r in rows]

    class NoDelayAE(AE):
        """pynetdicom at its best: TCP_NODELAY (without it ~21 queries/s, Nagle)."""

        def _create_socket(self, assoc, address, tls_args):
            sock = super()._create_socket(assoc, address, tls_args)
            sock.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock

    ae = NoDelayAE(ae_title=peer.calling_ae)
    ae.add_requested_context(FIND)
    started = time.perf_counter()
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.called_ae)
    assert assoc.is_established
    matches = 0
    for ds in identifiers:
        for status, match in assoc.send_c_find(ds, FIND):
            if status and status.Status in (0xFF00, 0xFF01) and match is not None:
                matches += 1
    assoc.release()
    pynetdicom_rate = len(rows) / (time.perf_counter() - started)
    started = time.perf_counter()
    with Session(peer, services=("find",)) as session:
        ours = sum(len(list(session.find(ds))) for ds in identifiers)
    assert ours == matches, (ours, matches)
    return {
        "pynetdicom_rows_per_s": pynetdicom_rate,
        "session_rows_per_s": len(rows) / (time.perf_counter() - started),
    }


def bench_validation(manifest, count: int) -> dict[str, float]:
    path = WORK / f"validate-{count}.csv"
    path.write_bytes(_csv(_queries(manifest, count)))
    code = (
        "import resource, sys, time\n"
        "from pulls.queries.files import parse_query_file\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "t = time.perf_counter()\n"
        "p = parse_query_file(data, name='q.csv', max_rows=10**7, max_bytes=1 << 30)\n"
        "s = time.perf_counter() - t\n"
        "assert p.ok, p.problems[:3]\n"
        "print(s, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, len(p.rows))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {"seconds": float(out[0]), "peak_mb": float(out[1]), "rows": int(out[2])}


def bench_job_page(node, owner, project, manifest, count: int) -> dict[str, float]:
    from django.test import Client
    from fixtures import big_find_job

    job = big_find_job(node, owner, project, manifest, count)
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(owner)
    urls = [
        f"/jobs/{job.code}/",
        f"/jobs/{job.code}/?rows_page=1000",
        f"/jobs/{job.code}/?status=failed",
        f"/jobs/{job.code}/?modality=CT&sort=-date&matches_page=200",
        f"/jobs/{job.code}/?date_from=2020-01-01&date_to=2021-12-31&sort=patient",
        f"/jobs/{job.code}/?description=THORAX",
    ]
    timings, per_url = [], {url: [] for url in urls}
    for _ in range(10):
        for url in urls:
            started = time.perf_counter()
            response = client.get(url)
            per_url[url].append((time.perf_counter() - started) * 1000)
            timings.append(per_url[url][-1])
            assert response.status_code == 200, url
    for url, ms in per_url.items():
        name = url.split("/", 3)[-1] or "(first page)"
        print(f"  {name:60s} median {statistics.median(ms):6.0f} ms")
    timings.sort()
    return {
        "p50_ms": statistics.median(timings),
        "p95_ms": timings[int(len(timings) * 0.95) - 1],
        "max_ms": timings[-1],
        "requests": len(timings),
    }


def main() -> None:
    exit_on_sigterm()  # a terminated run stops its servers too
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--page-rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    args = parser.parse_args()

    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "instance").mkdir(parents=True)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)  # as `make run` does
    from accounts.models import User
    from pulls.dicom import Peer
    from pulls.models import Membership, PacsNode, Project, Role
    from pulls.sandbox.orthanc import Orthanc
    from pulls.sandbox.procs import Server
    from pulls.sandbox.redis import redis_server
    from pulls.sandbox.synthetic import generate

    manifest = generate(WORK / "data", patients=100, studies=2, series=1, instances=1, seed=21)
    orthanc = Orthanc(WORK / "orthanc", modalities={"portal": ("PACSNPULL", "127.0.0.1", 9)})
    redis = redis_server(WORK / "redis", port=REDIS_PORT)
    worker = Server(
        "celery worker",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "portal",
            "worker",
            "--loglevel",
            "WARNING",
            "--concurrency",
            str(args.workers),
            "--without-gossip",
            "--without-mingle",
        ],  # fmt: skip
        ports=[],
        log_path=WORK / "worker.log",
        cwd=REPO,
    )
    results: dict[str, object] = {}
    try:
        orthanc.start()
        orthanc.upload(WORK / "data" / inst.path for inst in manifest.instances)
        redis.start()
        worker.start()
        time.sleep(3)  # the worker connects to Redis
        owner = User.objects.create_user("bench", may_pull_identifiable=True)
        project = Project.objects.create(
            name="Bench", slug="bench", deidentification="identifiable"
        )
        Membership.objects.create(project=project, user=owner, role=Role.OWNER)
        node = PacsNode.objects.create(
            name="BENCH",
            ae_title="ORTHANC",
            host="127.0.0.1",
            port=orthanc.dicom_port,
            queries_per_minute=0,  # measure the pipeline, not the PACS-protecting limit
        )
        node.granted_users.add(owner)
        peer = Peer("127.0.0.1", orthanc.dicom_port, "ORTHANC", "PACSNPULL")
        rows = _queries(manifest, args.rows)
        print(f"find job of {len(rows)} rows through the pipeline ...", flush=True)
        results["pipeline"] = bench_pipeline(node, owner, project, rows)
        print("the same queries on one association ...", flush=True)
        results["raw"] = bench_raw(peer, rows)
    finally:
        worker.stop()
        redis.stop()
        orthanc.stop()
    print(f"validating a {args.page_rows}-row file ...", flush=True)
    results["validation"] = bench_validation(manifest, args.page_rows)
    print(f"job page of a {args.page_rows}-row job ...", flush=True)
    results["job_page"] = bench_job_page(node, owner, project, manifest, args.page_rows)
    pipeline, raw = results["pipeline"], results["raw"]
    ratio = pipeline["rows_per_s"] / raw["pynetdicom_rows_per_s"]
    results["ratio_pipeline_vs_pynetdicom"] = ratio
    (WORK / "find.json").write_text(json.dumps(results, indent=2))
    validation, page = results["validation"], results["job_page"]
    print(
        f"\nfind job, {len(rows)} rows, {args.workers} worker processes, Orthanc on loopback:\n"
        f"  pipeline (file -> workers -> DB)  {pipeline['rows_per_s']:7.0f} rows/s "
        f"({pipeline['seconds']:.1f} s, {pipeline['matches']} matches)\n"
        f"  raw pynetdicom, one association  {raw['pynetdicom_rows_per_s']:7.0f} rows/s\n"
        f"  raw pacsnpull Session             {raw['session_rows_per_s']:7.0f} rows/s\n"
        f"  ratio pipeline / raw pynetdicom   {ratio:.2f}  (target >= 0.8)\n"
        f"validation of {validation['rows']} rows: {validation['seconds']:.1f} s, "
        f"peak {validation['peak_mb']:.0f} MB  (target < 10 s, < 300 MB)\n"
        f"job page, {args.page_rows} rows: p50 {page['p50_ms']:.0f} ms, "
        f"p95 {page['p95_ms']:.0f} ms, max {page['max_ms']:.0f} ms over {page['requests']} "
        f"requests  (target p95 < 300 ms)"
    )


if __name__ == "__main__":
    main()
