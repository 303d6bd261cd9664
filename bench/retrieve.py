"""Benchmark of retrieval jobs through the whole pipeline, beside DCMTK.

    .venv/bin/python bench/retrieve.py [--studies 50] [--runs 3] [--size 64]
        [--memory-instances 20000] [--pseudonymised] [--corpus N] [--dicomweb]

Own Orthanc, Redis, Celery worker (2 processes), storage SCP (its own
processes) and SQLite under bench/results/retrieve/ (or --work). For each
method, median of --runs:

- pipeline: a retrieval job of every study (job -> worker -> PACS -> storage
  SCP or the C-GET association -> files placed in the project and counted),
  made from rows naming the studies (each item asks the PACS how many
  instances to expect) and made from a find job's matches ("retrieve these":
  the find's counts are reused; the find itself is run once, untimed, as
  DCMTK is handed its UID list);
- DCMTK on the same data: movescu + storescp (+B), and getscu (+B), each with
  all queries on one association.

Every timed run writes into folders of its own (a new project, new DCMTK
output folders), nothing is deleted until the timing is over, and a run
started within a minute of the last deletion waits (bench/quiet_disk.py: on
this machine's disk, file creation is 10-30x slower for a minute after an
``rm -r`` of a few thousand files).

--queries-per-minute sets the node's C-FIND limit (default 0: none, to
measure the pipeline; a new node allows 120): rows naming studies need their
counts asked, one query per 50 studies.

--size is the rows and columns of the 16-bit images: 64 (~10 KB an instance,
the default) shows every cost per message; 256 (~130 KB, an MR slice) and 512
(~520 KB, a CT slice) are what a hospital's studies hold.

Target: pipeline >= 0.9x DCMTK's instances/s for each method. With
--memory-instances N, a C-GET job of N instances also samples the resident
memory of the worker processes at each tenth of the job: it should stay flat.

--pseudonymised: C-GET and C-MOVE jobs into a pseudonymised project beside
the same into an identifiable one (bench/pseudonymised_runs.py; target for
C-GET: >= 0.5x).

--corpus N runs over N copies of the real-archive corpus instead
(pulls.sandbox.corpus: 13 transfer syntaxes, multi-frame, SR, RT, PR, KO,
PDF, raw data, a private and a retired class), from rows naming the studies:
C-MOVE beside movescu + storescp +xa (it accepts every syntax it supports),
C-GET beside getscu (it offers the uncompressed syntaxes, or one compressed
one beside them: it has no way to accept them all, so Orthanc converts for it
or fails the study). Each side's count of instances received, instances/s and
MB/s as stored; where getscu does not receive every study, the C-GET ratio is
taken on the studies it does receive, both sides timed on those alone.
Targets: every instance for us; >= 0.9x DCMTK where DCMTK receives them too.

--dicomweb: a retrieval job over WADO-RS (Orthanc's DICOMweb plugin) beside a
raw dicomweb-client loop of the same studies, and the same job over C-GET
(bench/dicomweb_runs.py; target >= 0.9x the raw loop).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from workdir import REPO, default_work, work_dir  # bench/ is sys.path[0]

DEFAULT_WORK = default_work("retrieve")
WORK = work_dir("retrieve")
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from cpu import CpuMeter  # noqa: E402
from quiet_disk import discard, set_aside, wait_for_quiet_disk  # noqa: E402

from pulls.sandbox.procs import exit_on_sigterm, free_port  # noqa: E402

REDIS_PORT = free_port()
SCP_PORT = free_port()
DCMTK_PORT = free_port()
os.environ.update(
    PACSNPULL_INSTANCE_DIR=str(WORK / "instance"),
    REDIS_URL=f"redis://127.0.0.1:{REDIS_PORT}/0",
    PACSNPULL_SCP_PORT=str(SCP_PORT),
    PACSNPULL_STAGING_DIR=str(WORK / "instance" / "staging"),
    PACSNPULL_STORAGE_ROOT=str(WORK / "instance" / "storage"),
    PACSNPULL_ARRIVAL_WAIT_SECONDS="2",
    PACSNPULL_MIN_FREE_BYTES=str(64 << 20),
    DJANGO_SETTINGS_MODULE="portal.settings",
)


def _rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the Celery pool)."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            with open(f"/proc/{current}/task/{current}/children") as fh:
                pending += [int(child) for child in fh.read().split()]
        except OSError:
            continue
    return total / 1024


_ENDED = ("done", "failed", "paused")


def _status(job_pk: int) -> str:
    """The job's status with one prepared SQL statement: the wait must cost the
    machine little, as DCMTK's side waits for its processes without any CPU."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT status FROM pulls_job WHERE id = %s", [job_pk])
        return cursor.fetchone()[0]


def _wait_done(job_pk: int, *, sample=None):
    """The job once it has ended. The poll's interval does not enter the timing
    (``run_pipeline`` takes the job's own finished_at), so it can be long enough
    that the waiting costs the pipeline's cores next to nothing."""
    from pulls.models import Job

    while _status(job_pk) not in _ENDED:
        if sample is not None:
            sample()
        time.sleep(0.025)
    return Job.objects.get(pk=job_pk)


def run_find(node, owner, project, uids):
    """The find a researcher runs first ("retrieve these" starts from it); not timed."""
    from pulls.models import JobKind
    from pulls.services import job_create, job_start

    rows = [{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": uid} for uid in uids]
    job = job_create(kind=JobKind.FIND, owner=owner, project=project, node=node, rows=rows)
    job_start(job=job, user=owner)
    return _wait_done(job.pk)


def fresh_project(owner, slug: str, *, deidentification: str = "identifiable"):
    """A project of its own for one timed run: empty storage, nothing to skip."""
    from pulls.models import Membership, Project, Role

    project = Project.objects.create(name=slug, slug=slug, deidentification=deidentification)
    Membership.objects.create(project=project, user=owner, role=Role.OWNER)
    return project


def run_pipeline(kind, node, owner, project, uids, worker_pid=None, find_job=None) -> dict:
    """A retrieval job of ``uids`` (rows naming them), or of ``find_job``'s matches
    ("retrieve these": the find's instance counts are reused; the find is in
    ``project``) into ``project`` (a fresh one), timed until done."""
    from engine import arrivals

    from pulls.models import Job, JobKind, JobStatus
    from pulls.services import job_create, job_start, retrieval_create_from_find

    rows = [{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": uid} for uid in uids]
    # Timed from here to the moment the worker that ended the job marked it done
    # (its finished_at, on the same clock), not to when the poll below saw it:
    # DCMTK's side ends exactly when movescu/getscu exits.
    started = time.time()
    if find_job is None:
        job = job_create(kind=kind, owner=owner, project=project, node=node, rows=rows)
    else:
        method = "get" if kind == JobKind.GET else "move"
        job = retrieval_create_from_find(find_job=find_job, user=owner, method=method)
    job_start(job=job, user=owner)
    samples = []

    def sample() -> None:  # the memory job: resident memory as the rows get done
        done = Job.objects.filter(pk=job.pk).values_list("items_done", flat=True).get()
        samples.append((done, _rss_mb(worker_pid)))

    job = _wait_done(job.pk, sample=sample if worker_pid else None)
    assert job.status == JobStatus.DONE, (job.status, job.waiting_reason, job.items_failed)
    seconds = job.finished_at.timestamp() - started
    files = [p for p in project.storage_dir.rglob("*.dcm")]
    size = sum(p.stat().st_size for p in files)
    assert len(files) == job.instances_received == job.instances_expected, (
        len(files),
        job.instances_received,
        job.instances_expected,
    )
    return {
        "instances": len(files),
        "ips": len(files) / seconds,
        "mbps": size / seconds / 1e6,
        "seconds": seconds,
        "rss_samples": samples,
        **arrivals(files, started),
    }


def _per_instance(
    seconds: dict[str, list[dict[str, float]]], instances: int
) -> dict[str, dict[str, float]]:
    """Median CPU milliseconds per instance, by measurement and process."""
    return {
        key: {
            name: statistics.median(one[name] for one in used) * 1000 / instances
            for name in used[0]
        }
        for key, used in seconds.items()
    }


def _pipeline_rate(*args, **kwargs) -> float:
    return run_pipeline(*args, **kwargs)["ips"]


def _dcmtk_rate(tool, *args) -> float:
    from engine import _count_files

    seconds, out = tool(*args)
    return _count_files(out)[0] / seconds


def synthetic_runs(
    args, *, node, owner, project, uids, peer, queries, pids: dict[str, int], instances: int
) -> dict:
    """The synthetic data's runs: C-MOVE and C-GET from rows and from a find,
    beside movescu + storescp and getscu, alternating, CPU counted per process."""
    from engine import dcmtk_get, dcmtk_move

    from pulls.models import JobKind

    find_job = run_find(node, owner, project, uids)
    assert find_job.matches == len(uids), find_job.matches
    keys = ["move", "move_found", "dcmtk_move", "get", "get_found", "getscu"]
    runs: dict[str, list] = {key: [] for key in keys}
    cpu: dict[str, list[dict[str, float]]] = {key: [] for key in keys}
    kernel: dict[str, list[dict[str, float]]] = {key: [] for key in keys}

    def timed(key: str, measure, *margs, **kwargs) -> None:
        meter = CpuMeter(pids).start()
        runs[key].append(measure(*margs, **kwargs))
        cpu[key].append(meter.stop())
        kernel[key].append(dict(meter.system))

    for run in range(1, args.runs + 1):
        for kind, key in ((JobKind.MOVE, "move"), (JobKind.GET, "get")):
            fresh = fresh_project(owner, f"{key}-{run}")
            timed(key, _pipeline_rate, kind, node, owner, fresh, uids)
            found_in = fresh_project(owner, f"{key}-found-{run}")
            found = run_find(node, owner, found_in, uids)  # untimed, as said above
            timed(
                f"{key}_found", _pipeline_rate, kind, node, owner, found_in, uids,
                find_job=found,
            )  # fmt: skip
            out_dir = WORK / "dcmtk" / f"{key}-{run}"
            if kind == JobKind.MOVE:
                timed("dcmtk_move", _dcmtk_rate, dcmtk_move, peer, queries, out_dir, DCMTK_PORT)
            else:
                timed("getscu", _dcmtk_rate, dcmtk_get, peer, queries, out_dir)
        last = {key: values[-1] for key, values in runs.items()}
        print(
            f"run {run}: move {last['move']:.0f} / from a find {last['move_found']:.0f} "
            f"inst/s (DCMTK {last['dcmtk_move']:.0f}), get {last['get']:.0f} / from a find "
            f"{last['get_found']:.0f} inst/s (getscu {last['getscu']:.0f})",
            flush=True,
        )
    medians = {key: statistics.median(values) for key, values in runs.items()}
    return dict(
        instances=instances,
        medians=medians,
        cpu_ms_per_instance=_per_instance(cpu, instances),
        kernel_ms_per_instance=_per_instance(kernel, instances),
        ratio_move=medians["move"] / medians["dcmtk_move"],
        ratio_move_found=medians["move_found"] / medians["dcmtk_move"],
        ratio_get=medians["get"] / medians["getscu"],
        ratio_get_found=medians["get_found"] / medians["getscu"],
    )


def main() -> None:
    exit_on_sigterm()  # a terminated run stops its servers too
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=50)
    parser.add_argument("--series", type=int, default=3)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--size", type=int, default=64,
        help="rows and columns of each 16-bit image: 64 (~10 KB, every cost per message shows), "
        "512 (~520 KB, a CT slice)",
    )  # fmt: skip
    parser.add_argument("--memory-instances", type=int, default=0)
    parser.add_argument(
        "--queries-per-minute", type=int, default=0,
        help="the node's C-FIND limit: 0 (none) measures the pipeline; a new node allows 120",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=int, default=2, help="worker processes (the node allows 2 associations)"
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=DEFAULT_WORK,
        help="folder for everything the run writes, both sides' files included (e.g. a tmpfs)",
    )
    parser.add_argument(
        "--pseudonymised",
        action="store_true",
        help="retrieval into a pseudonymised project beside an identifiable one (target for "
        "C-GET: >= 0.5x)",
    )
    parser.add_argument(
        "--dicomweb", action="store_true",
        help="a WADO-RS job beside a raw dicomweb-client loop and a C-GET job (see above)",
    )  # fmt: skip
    parser.add_argument(
        "--corpus", type=int, default=0,
        help="N copies of the real-archive corpus instead of synthetic studies (see above)",
    )  # fmt: skip
    args = parser.parse_args()

    # The previous results are deleted after this run's timing, not before it.
    previous = set_aside(WORK)
    (WORK / "instance").mkdir(parents=True)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from engine import _query, _write_queries

    from accounts.models import User
    from pulls.dicom import Peer
    from pulls.models import JobKind, PacsNode
    from pulls.sandbox.orthanc import Orthanc
    from pulls.sandbox.procs import Server
    from pulls.sandbox.redis import redis_server
    from pulls.sandbox.synthetic import generate

    if args.corpus:
        from pulls.sandbox.corpus import generate_corpus

        copies = [generate_corpus(WORK / "data" / f"copy{n}", seed=n) for n in range(args.corpus)]
        files = [path for copy in copies for path in copy.files()]
        by_study = {uid: insts for copy in copies for uid, insts in copy.studies.items()}
    else:
        manifest = generate(
            WORK / "data", patients=args.studies, studies=1, series=args.series,
            instances=args.instances, seed=31, size=args.size,
        )  # fmt: skip
        files = [WORK / "data" / inst.path for inst in manifest.instances]
        by_study = manifest.studies
    uids = sorted(by_study)
    orthanc = Orthanc(
        WORK / "orthanc",
        modalities={
            "pacsnpull": ("PACSNPULL", "127.0.0.1", SCP_PORT),
            "dcmtk": ("DCMTKSCP", "127.0.0.1", DCMTK_PORT),
        },
        extra_config={"UnknownSopClassAccepted": True},
        dicomweb=args.dicomweb,
    )
    redis = redis_server(WORK / "redis", port=REDIS_PORT)
    scp = Server(
        "storage SCP",
        [sys.executable, "manage.py", "storescp"],
        ports=[SCP_PORT],
        log_path=WORK / "storescp.log",
        cwd=REPO,
    )
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
        orthanc.upload(files)
        redis.start()
        scp.start()
        owner = User.objects.create_user("bench", may_pull_identifiable=True)
        project = fresh_project(owner, "bench-find")
        node = PacsNode.objects.create(
            name="BENCH",
            ae_title="ORTHANC",
            host="127.0.0.1",
            port=orthanc.dicom_port,
            queries_per_minute=args.queries_per_minute,  # 0: the pipeline, not the limit
        )
        node.granted_users.add(owner)
        # Registered before the workers start, as in a running portal: they prepare
        # its association requests when they start (runner.sessions_prepare).
        worker.start()
        time.sleep(3)
        wait_for_quiet_disk(WORK)
        peer = Peer("127.0.0.1", orthanc.dicom_port, "ORTHANC", "PACSNPULL")
        queries = _write_queries(WORK / "queries", uids, _query)
        pids = {
            "PACS": orthanc.server.pid, "worker": worker.pid, "storage SCP": scp.pid,
            "redis": redis.pid,
        }  # fmt: skip
        if os.environ.get("PACSNPULL_SANDBOX_POSTGRES_PID"):  # under pulls.sandbox.postgres
            pids["database"] = int(os.environ["PACSNPULL_SANDBOX_POSTGRES_PID"])
        if args.pseudonymised:
            from pseudonymised_runs import pseudonymised_runs

            results["pseudonymised"] = pseudonymised_runs(
                args.runs, node=node, owner=owner, uids=uids, run_pipeline=run_pipeline,
                fresh_project=fresh_project,
            )  # fmt: skip
        elif args.dicomweb:
            from dicomweb_runs import dicomweb_runs

            web_node = PacsNode.objects.create(
                name="BENCH-WEB", protocol="dicomweb", base_url=f"{orthanc.url}/dicom-web",
                queries_per_minute=args.queries_per_minute,
            )  # fmt: skip
            web_node.granted_users.add(owner)
            results["dicomweb"] = dicomweb_runs(
                args.runs, web_node=web_node, dimse_node=node, owner=owner, uids=uids,
                work=WORK, run_pipeline=run_pipeline, fresh_project=fresh_project,
            )  # fmt: skip
        elif args.corpus:
            from corpus_runs import corpus_runs

            results["corpus"] = corpus_runs(
                args.runs, node=node, owner=owner, by_study=by_study, peer=peer, work=WORK,
                dcmtk_port=DCMTK_PORT, run_pipeline=run_pipeline, fresh_project=fresh_project,
            )  # fmt: skip
        else:
            results.update(
                synthetic_runs(
                    args,
                    node=node,
                    owner=owner,
                    project=project,
                    uids=uids,
                    peer=peer,
                    queries=queries,
                    pids=pids,
                    instances=len(files),
                )  # fmt: skip
            )
        if args.memory_instances:
            big = generate(
                WORK / "big", patients=args.memory_instances // 100, studies=1, series=4,
                instances=25, seed=32, size=32,
            )  # fmt: skip
            orthanc.upload(WORK / "big" / inst.path for inst in big.instances)
            memory = run_pipeline(
                JobKind.GET, node, owner, fresh_project(owner, "memory"), sorted(big.studies),
                worker_pid=worker.pid,
            )  # fmt: skip
            results["memory"] = memory
    finally:
        worker.stop()
        scp.stop()
        redis.stop()
        orthanc.stop()
        discard(previous, WORK)
    (WORK / "retrieve.json").write_text(json.dumps(results, indent=2))
    if "pseudonymised" in results:
        done = results["pseudonymised"]
        m = done["medians"]
        print(
            f"\nmedian of {args.runs} runs, {len(files)} instances, {args.size}x{args.size}:\n"
            f"  C-GET  identifiable {m['get_identifiable']:6.0f} inst/s, pseudonymised "
            f"{m['get_pseudonymised']:6.0f}: ratio {done['ratio_get']:.2f} (target >= 0.5)\n"
            f"  C-MOVE identifiable {m['move_identifiable']:6.0f} inst/s, pseudonymised "
            f"{m['move_pseudonymised']:6.0f}: ratio {done['ratio_move']:.2f}"
        )
        return
    if "corpus" in results:
        return
    if "dicomweb" in results:
        done = results["dicomweb"]
        m, n = done["medians"], done["counts"]
        print(
            f"\nmedian of {args.runs} runs, {len(files)} instances, {args.size}x{args.size}:\n"
            f"  WADO-RS job {m['wado']:6.0f} inst/s ({n['wado']} instances)   raw "
            f"dicomweb-client {m['raw_dicomweb_client']:6.0f} ({n['raw_dicomweb_client']})   "
            f"ratio {done['ratio']:.2f} (target >= 0.9)\n"
            f"  C-GET job   {m['c_get']:6.0f} inst/s ({n['c_get']}): WADO-RS/C-GET "
            f"{done['ratio_c_get']:.2f}"
        )
        return
    m = results["medians"]
    q = args.queries_per_minute
    limit = f", the node allowing {q} C-FINDs a minute" if q else ""
    print(
        f"\nmedian of {args.runs} runs, {results['instances']} instances ({args.studies} studies,"
        f" {args.size}x{args.size} pixels),"
        f" Orthanc on loopback, {args.workers} worker processes{limit}:\n"
        f"  C-MOVE pipeline {m['move']:6.0f} inst/s, from a find {m['move_found']:6.0f}   "
        f"movescu+storescp {m['dcmtk_move']:6.0f} inst/s   ratios {results['ratio_move']:.2f}, "
        f"{results['ratio_move_found']:.2f}  (target >= 0.9)\n"
        f"  C-GET  pipeline {m['get']:6.0f} inst/s, from a find {m['get_found']:6.0f}   "
        f"getscu           {m['getscu']:6.0f} inst/s   ratios {results['ratio_get']:.2f}, "
        f"{results['ratio_get_found']:.2f}  (target >= 0.9)"
    )
    print("  CPU per instance (ms, median), by process (of which in the kernel):")
    for key, used in results["cpu_ms_per_instance"].items():
        in_kernel = results["kernel_ms_per_instance"][key]
        parts = "  ".join(
            f"{name} {ms:.2f} ({in_kernel[name]:.2f})" for name, ms in used.items() if ms >= 0.005
        )
        print(
            f"    {key:11} total {sum(used.values()):.2f} ({sum(in_kernel.values()):.2f}):  {parts}"
        )
    if "memory" in results:
        samples = results["memory"]["rss_samples"]
        tenth = max(1, len(samples) // 10)
        picked = [f"{done}:{rss:.0f}" for done, rss in samples[::tenth]]
        print(
            f"  memory over a {results['memory']['instances']}-instance C-GET job "
            f"(items done: worker RSS MB): {' '.join(picked)}"
        )


if __name__ == "__main__":
    main()
