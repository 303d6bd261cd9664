"""The real-archive corpus through the pipeline, beside DCMTK (bench/retrieve.py --corpus N).

C-MOVE: our job into our storage SCP, beside movescu into storescp +xa.
C-GET: our job, beside getscu; getscu cannot offer every syntax, so Orthanc
converts what it can for it and fails the studies it cannot. Its studies
received whole are timed again on both sides, alone: the ratio where DCMTK
receives them too. Alternating, median of the runs.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from engine import _count_files, _query, _write_queries, arrivals, dcmtk_get, dcmtk_move
from quiet_disk import wait_for_quiet_disk

from pulls.models import JobKind


def _received_sops(folder: Path) -> set[str]:
    """SOP Instance UIDs of what DCMTK wrote: getscu names its files by the UID,
    storescp by MODALITY.<UID>."""
    return {
        path.name if path.name[0].isdigit() else path.name.split(".", 1)[-1]
        for path in folder.rglob("*")
        if path.is_file() and not path.name.startswith(".")
    }


def _dcmtk(tool, *args) -> dict:
    started = time.time()
    seconds, out = tool(*args)
    count, size = _count_files(out)
    files = [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")]
    return {
        "instances": count, "ips": count / seconds, "mbps": size / seconds / 1e6, "out": out,
        **arrivals(files, started),
    }  # fmt: skip


def corpus_runs(
    runs: int,
    *,
    node,
    owner,
    by_study: dict,
    peer,
    work: Path,
    dcmtk_port: int,
    run_pipeline,
    fresh_project,
) -> dict:
    """``run_pipeline`` and ``fresh_project``: bench/retrieve.py's (it runs as __main__)."""
    uids = sorted(by_study)
    total = sum(len(insts) for insts in by_study.values())
    queries = _write_queries(work / "queries-corpus", uids, _query)
    # Which studies getscu brings whole (untimed): the C-GET ratio is taken on those.
    first = _dcmtk(dcmtk_get, peer, queries, work / "dcmtk" / "get-probe")
    got = _received_sops(first["out"])
    whole = [uid for uid in uids if {i.sop_instance_uid for i in by_study[uid]} <= got]
    assert whole, "getscu received no study whole: nothing to compare on"
    whole_queries = _write_queries(work / "queries-corpus-whole", whole, _query)
    whole_total = sum(len(by_study[uid]) for uid in whole)
    keys = ["move", "dcmtk_move", "get", "getscu", "get_common", "getscu_common"]
    results: dict[str, list[dict]] = {key: [] for key in keys}
    for run in range(1, runs + 1):
        wait_for_quiet_disk(work)
        results["move"].append(
            run_pipeline(JobKind.MOVE, node, owner, fresh_project(owner, f"cm-{run}"), uids)
        )
        results["dcmtk_move"].append(
            _dcmtk(
                lambda *a: dcmtk_move(*a, accept_all=True),
                peer,
                queries,
                work / "dcmtk" / f"move-{run}",
                dcmtk_port,
            )  # fmt: skip
        )
        results["get"].append(
            run_pipeline(JobKind.GET, node, owner, fresh_project(owner, f"cg-{run}"), uids)
        )
        results["getscu"].append(_dcmtk(dcmtk_get, peer, queries, work / "dcmtk" / f"get-{run}"))
        results["get_common"].append(
            run_pipeline(JobKind.GET, node, owner, fresh_project(owner, f"cgw-{run}"), whole)
        )
        results["getscu_common"].append(
            _dcmtk(dcmtk_get, peer, whole_queries, work / "dcmtk" / f"get-whole-{run}")
        )
        print(
            f"corpus run {run}: move {results['move'][-1]['ips']:.0f} inst/s "
            f"(movescu+storescp +xa {results['dcmtk_move'][-1]['ips']:.0f}); get "
            f"{results['get'][-1]['ips']:.0f} (getscu {results['getscu'][-1]['ips']:.0f}, "
            f"{results['getscu'][-1]['instances']} of {total}); on getscu's whole studies: get "
            f"{results['get_common'][-1]['ips']:.0f}, getscu "
            f"{results['getscu_common'][-1]['ips']:.0f}",
            flush=True,
        )
    summary = {
        key: {
            name: statistics.median(r[name] for r in values)
            for name in ("instances", "ips", "mbps", "first_ms", "last_ms")
        }
        for key, values in results.items()
    }
    summary["corpus_instances"] = total
    summary["getscu_whole_studies"] = f"{len(whole)} of {len(uids)} ({whole_total} instances)"
    summary["ratio_move"] = summary["move"]["ips"] / summary["dcmtk_move"]["ips"]
    summary["ratio_get_common"] = summary["get_common"]["ips"] / summary["getscu_common"]["ips"]
    print(f"\nreal-archive corpus, {total} instances, {len(uids)} studies, median of {runs} runs:")
    for key, label in (
        ("move", "C-MOVE pipeline"),
        ("dcmtk_move", "movescu + storescp +xa"),
        ("get", "C-GET pipeline"),
        ("getscu", "getscu"),
        ("get_common", "C-GET pipeline, getscu's whole studies"),
        ("getscu_common", "getscu, its whole studies"),
    ):
        one = summary[key]
        print(
            f"  {label:40} {one['instances']:6.0f} instances  {one['ips']:7.0f} inst/s  "
            f"{one['mbps']:6.1f} MB/s"
        )
    ours, theirs = summary["get_common"], summary["getscu_common"]
    print(
        f"  on getscu's whole studies, first and last instance written after (ms): C-GET "
        f"pipeline {ours['first_ms']:.0f} and {ours['last_ms']:.0f}, getscu "
        f"{theirs['first_ms']:.0f} and {theirs['last_ms']:.0f}"
    )
    print(
        f"  ratios: C-MOVE {summary['ratio_move']:.2f}, C-GET where getscu receives them "
        f"{summary['ratio_get_common']:.2f} (target >= 0.9); getscu received whole "
        f"{summary['getscu_whole_studies']}"
    )
    return summary
