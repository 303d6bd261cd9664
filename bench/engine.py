"""Benchmark of the DICOM engine against DCMTK on the same Orthanc, in one run.

    .venv/bin/python bench/engine.py [--studies 200] [--series 3] [--instances 10] [--runs 3]

Starts its own Orthanc (Debian package) on loopback, loads synthetic studies,
and measures, median of --runs:

- C-FIND, one association, one STUDY-level query per study: pynetdicom (our
  Session) against DCMTK findscu given all query files at once;
- C-MOVE of every study to a storage SCP: our Session + our storage SCP (its
  own process, as in production) against movescu + storescp (+B);
- C-GET of every study on one association: our Session against getscu.

Prints instances/s, MB/s and the ratios; writes bench/results/engine.json.
Targets (issue 3): C-FIND >= 200 queries/s; retrieval >= 0.9x DCMTK.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian  # noqa: E402
from quiet_disk import discard, set_aside, wait_for_quiet_disk  # noqa: E402

from pulls.dicom import Peer, Session  # noqa: E402
from pulls.sandbox.orthanc import Orthanc  # noqa: E402
from pulls.sandbox.procs import (  # noqa: E402
    Server,
    exit_on_sigterm,
    free_port,
    require_program,
)
from pulls.sandbox.synthetic import Manifest, generate  # noqa: E402

OUR_AE = "PACSNPULL"
DCMTK_SCP_AE = "DCMTKSCP"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def _query(uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = uid
    return ds


def _find_query(uid: str) -> Dataset:
    ds = _query(uid)
    ds.PatientID = ""
    ds.StudyDate = ""
    ds.AccessionNumber = ""
    ds.NumberOfStudyRelatedInstances = ""
    return ds


def _write_queries(folder: Path, uids: list[str], make) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, uid in enumerate(uids):
        ds = make(uid)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"q{n:05d}.dcm"
        ds.save_as(path, enforce_file_format=False, implicit_vr=False, little_endian=True)
        paths.append(str(path))
    return paths


def _count_files(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]
    return len(files), sum(p.stat().st_size for p in files)


def arrivals(files: list[Path], started: float) -> dict[str, float]:
    """When the first and the last file were written, in ms after ``started``
    (a time.time()): where a run's time goes, before the first instance and
    after it. File times are the kernel's coarse clock (a few ms)."""
    times = [p.stat().st_mtime for p in files]
    if not times:
        return {}
    return {"first_ms": (min(times) - started) * 1000, "last_ms": (max(times) - started) * 1000}


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def bench_find(peer: Peer, uids: list[str], query_files: list[str]) -> dict[str, float]:
    started = time.perf_counter()
    with Session(peer, services=("find",)) as session:
        matches = sum(len(list(session.find(_find_query(uid)))) for uid in uids)
    ours = len(uids) / (time.perf_counter() - started)
    assert matches == len(uids), f"pynetdicom C-FIND found {matches} of {len(uids)} studies"
    started = time.perf_counter()
    subprocess.run(
        [
            require_program("findscu", "dcmtk"),
            "-S",
            "-aet",
            OUR_AE,
            "-aec",
            peer.called_ae,
            peer.host,
            str(peer.port),
            *query_files,
        ],  # fmt: skip
        check=True,
        capture_output=True,
        env=DCMTK_ENV,
    )
    dcmtk = len(uids) / (time.perf_counter() - started)
    return {"ours_qps": ours, "findscu_qps": dcmtk}


def dcmtk_move(
    peer: Peer, query_files: list[str], work: Path, port: int, *, accept_all: bool = False
) -> tuple[float, Path]:
    """movescu with all query files on one association into storescp (+B; with
    ``accept_all``, +xa and -pm: every transfer syntax and SOP class it supports;
    then a failed sub-operation is counted by what arrived, not an error)."""
    out = _fresh(work / "move-dcmtk")
    storescp = Server(
        "storescp",
        [
            require_program("storescp", "dcmtk"),
            "-aet",
            DCMTK_SCP_AE,
            "+B",
            *(["+xa", "-pm"] if accept_all else []),
            "-od",
            str(out),
            str(port),
        ],  # fmt: skip
        ports=[port],
        log_path=work / "storescp.log",
        env={"TCP_NODELAY": "1"},
    ).start()
    try:
        started = time.perf_counter()
        subprocess.run(
            [
                require_program("movescu", "dcmtk"),
                "-S",
                "-aet",
                OUR_AE,
                "-aec",
                peer.called_ae,
                "-aem",
                DCMTK_SCP_AE,
                peer.host,
                str(peer.port),
                *query_files,
            ],  # fmt: skip
            check=not accept_all,
            capture_output=True,
            env=DCMTK_ENV,
        )
        return time.perf_counter() - started, out
    finally:
        storescp.stop()


def dcmtk_get(peer: Peer, query_files: list[str], work: Path) -> tuple[float, Path]:
    """getscu with all query files on one association (+B)."""
    out = _fresh(work / "get-dcmtk")
    started = time.perf_counter()
    # getscu 3.6.7 may crash after the last response when given several query
    # files; every instance has arrived by then, so its exit status is not used.
    subprocess.run(
        [
            require_program("getscu", "dcmtk"),
            "-S",
            "-aet",
            OUR_AE,
            "-aec",
            peer.called_ae,
            "+B",
            "-od",
            str(out),
            peer.host,
            str(peer.port),
            *query_files,
        ],  # fmt: skip
        check=False,
        capture_output=True,
        env=DCMTK_ENV,
    )
    return time.perf_counter() - started, out


def bench_move(
    peer: Peer, uids: list[str], query_files: list[str], work: Path, ports: dict[str, int]
) -> dict[str, float]:
    # ours: Session (pynetdicom) sends the C-MOVEs, our storage SCP receives in its own process
    staging = _fresh(work / "move-ours")
    scp = Server(
        "our storage SCP",
        [
            sys.executable,
            "-m",
            "pulls.dicom.scp_processes",
            "--aet",
            OUR_AE,
            "--port",
            str(ports["ours"]),
            "--staging",
            str(staging),
        ],  # fmt: skip
        ports=[ports["ours"]],
        log_path=work / "our-scp.log",
        cwd=REPO,
    ).start()
    try:
        started = time.perf_counter()
        with Session(peer, services=("move",)) as session:
            completed = sum(session.move(_query(uid), destination=OUR_AE).completed for uid in uids)
        ours_seconds = time.perf_counter() - started
    finally:
        scp.stop()
    ours_count, ours_bytes = _count_files(staging)
    assert ours_count == completed, f"our SCP holds {ours_count}, the PACS sent {completed}"

    dcmtk_seconds, out = dcmtk_move(peer, query_files, work, ports["dcmtk"])
    dcmtk_count, dcmtk_bytes = _count_files(out)
    assert dcmtk_count == ours_count, f"storescp holds {dcmtk_count}, ours {ours_count}"
    return {
        "ours_ips": ours_count / ours_seconds,
        "ours_mbps": ours_bytes / ours_seconds / 1e6,
        "dcmtk_ips": dcmtk_count / dcmtk_seconds,
        "dcmtk_mbps": dcmtk_bytes / dcmtk_seconds / 1e6,
    }


def bench_get(peer: Peer, uids: list[str], query_files: list[str], work: Path) -> dict[str, float]:
    staging = _fresh(work / "get-ours")
    started = time.perf_counter()
    with Session(peer, services=("get",), staging_dir=staging) as session:
        for uid in uids:
            session.get(_query(uid))
    ours_seconds = time.perf_counter() - started
    ours_count, ours_bytes = _count_files(staging)

    dcmtk_seconds, out = dcmtk_get(peer, query_files, work)
    dcmtk_count, dcmtk_bytes = _count_files(out)
    assert dcmtk_count == ours_count, f"getscu got {dcmtk_count}, ours {ours_count}"
    return {
        "ours_ips": ours_count / ours_seconds,
        "ours_mbps": ours_bytes / ours_seconds / 1e6,
        "dcmtk_ips": dcmtk_count / dcmtk_seconds,
        "dcmtk_mbps": dcmtk_bytes / dcmtk_seconds / 1e6,
    }


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main() -> None:
    exit_on_sigterm()  # a terminated run stops its servers too
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--series", type=int, default=3)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--size", type=int, default=64, help="rows and columns of each image")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "results" / "engine")
    args = parser.parse_args()

    work = args.work
    data = work / "data"
    shape = f"{args.studies}x{args.series}x{args.instances}x{args.size}"
    if (data / "manifest.csv").exists() and (work / "shape").read_text() == shape:
        manifest = Manifest.read_csv(data / "manifest.csv")
    else:
        shutil.rmtree(work, ignore_errors=True)
        print(f"generating {shape} ...", flush=True)
        manifest = generate(
            data, patients=args.studies, studies=1, series=args.series,
            instances=args.instances, seed=11, size=args.size,
        )  # fmt: skip
        (work / "shape").write_text(shape)
    uids = sorted(manifest.studies)
    ports = {"ours": free_port(), "dcmtk": free_port()}
    # Each run writes into folders of its own; what earlier invocations left is
    # deleted after the timing (bench/quiet_disk.py says why).
    runs_dir, orthanc_dir = work / "runs", work / "orthanc"
    previous = [(set_aside(runs_dir), runs_dir), (set_aside(orthanc_dir), orthanc_dir)]
    orthanc_dir.mkdir(parents=True)
    orthanc = Orthanc(
        orthanc_dir,
        modalities={
            "pacsnpull": (OUR_AE, "127.0.0.1", ports["ours"]),
            "dcmtk": (DCMTK_SCP_AE, "127.0.0.1", ports["dcmtk"]),
        },
    ).start()
    try:
        print(f"loading {len(manifest.instances)} instances into Orthanc ...", flush=True)
        orthanc.upload(data / inst.path for inst in manifest.instances)
        peer = Peer("127.0.0.1", orthanc.dicom_port, orthanc.aet, OUR_AE)
        find_files = _write_queries(work / "queries-find", uids, _find_query)
        retrieve_files = _write_queries(work / "queries-retrieve", uids, _query)
        finds, moves, gets = [], [], []
        wait_for_quiet_disk(runs_dir)
        wait_for_quiet_disk(orthanc_dir)
        for run in range(1, args.runs + 1):
            finds.append(bench_find(peer, uids, find_files))
            moves.append(bench_move(peer, uids, retrieve_files, runs_dir / str(run), ports))
            gets.append(bench_get(peer, uids, retrieve_files, runs_dir / str(run)))
            print(
                f"run {run}: find {finds[-1]['ours_qps']:.0f}/s (findscu "
                f"{finds[-1]['findscu_qps']:.0f}/s), move {moves[-1]['ours_ips']:.0f} inst/s "
                f"(DCMTK {moves[-1]['dcmtk_ips']:.0f}), get {gets[-1]['ours_ips']:.0f} inst/s "
                f"(getscu {gets[-1]['dcmtk_ips']:.0f})",
                flush=True,
            )
    finally:
        orthanc.stop()
        for old, current in previous:
            discard(old, current)

    find, move, get = _median(finds), _median(moves), _median(gets)
    result = {
        "shape": shape,
        "instances": len(manifest.instances),
        "runs": args.runs,
        "find": find,
        "move": move,
        "get": get,
        "ratios": {
            "find_vs_findscu": find["ours_qps"] / find["findscu_qps"],
            "move_vs_dcmtk": move["ours_ips"] / move["dcmtk_ips"],
            "get_vs_getscu": get["ours_ips"] / get["dcmtk_ips"],
        },
    }
    (work / "engine.json").write_text(json.dumps(result, indent=2))
    print(
        f"\nmedian of {args.runs} runs, {len(manifest.instances)} instances "
        f"({args.studies} studies), Orthanc on loopback:\n"
        f"  C-FIND  ours {find['ours_qps']:7.0f} queries/s   findscu {find['findscu_qps']:7.0f}"
        f"   ratio {result['ratios']['find_vs_findscu']:.2f}  (target >= 200 queries/s)\n"
        f"  C-MOVE  ours {move['ours_ips']:7.0f} inst/s {move['ours_mbps']:6.1f} MB/s   "
        f"movescu+storescp {move['dcmtk_ips']:7.0f} inst/s {move['dcmtk_mbps']:6.1f} MB/s   "
        f"ratio {result['ratios']['move_vs_dcmtk']:.2f}  (target >= 0.9)\n"
        f"  C-GET   ours {get['ours_ips']:7.0f} inst/s {get['ours_mbps']:6.1f} MB/s   "
        f"getscu {get['dcmtk_ips']:7.0f} inst/s {get['dcmtk_mbps']:6.1f} MB/s   "
        f"ratio {result['ratios']['get_vs_getscu']:.2f}  (target >= 0.9)"
    )


if __name__ == "__main__":
    main()
