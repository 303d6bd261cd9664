"""bench/retrieve.py --dicomweb: a retrieval job over WADO-RS from Orthanc's
DICOMweb plugin through the whole pipeline (job -> worker -> WADO-RS ->
staging -> project, counted and recorded), alternating with a raw
dicomweb-client loop of the same studies (``iter_study`` of each, every
instance as stored, each data set written to a file of its own, one process),
and the same job over DIMSE C-GET reported beside them.

Target: the pipeline >= 0.9x the raw loop's instances/s.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path


def raw_loop(base_url: str, uids: list[str], out: Path) -> dict:
    """What a script would do with dicomweb-client alone."""
    from dicomweb_client.api import DICOMwebClient

    out.mkdir(parents=True)
    client = DICOMwebClient(url=base_url)
    started = time.perf_counter()
    count = 0
    for uid in uids:
        for ds in client.iter_study(uid, media_types=(("application/dicom", "*"),)):
            ds.save_as(out / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
            count += 1
    seconds = time.perf_counter() - started
    return {"instances": count, "ips": count / seconds, "seconds": seconds}


def dicomweb_runs(
    runs: int, *, web_node, dimse_node, owner, uids, work: Path, run_pipeline, fresh_project
) -> dict:
    from pulls.models import JobKind

    keys = ["wado", "raw_dicomweb_client", "c_get"]
    rates: dict[str, list[float]] = {key: [] for key in keys}
    counts: dict[str, int] = {}
    for run in range(1, runs + 1):
        project = fresh_project(owner, f"wado-{run}")
        done = run_pipeline(JobKind.GET, web_node, owner, project, uids)
        rates["wado"].append(done["ips"])
        counts["wado"] = done["instances"]
        raw = raw_loop(web_node.base_url, uids, work / "raw" / f"run-{run}")
        rates["raw_dicomweb_client"].append(raw["ips"])
        counts["raw_dicomweb_client"] = raw["instances"]
        done = run_pipeline(
            JobKind.GET, dimse_node, owner, fresh_project(owner, f"cget-{run}"), uids
        )
        rates["c_get"].append(done["ips"])
        counts["c_get"] = done["instances"]
        last = {key: values[-1] for key, values in rates.items()}
        print(
            f"run {run}: WADO-RS job {last['wado']:.0f} inst/s, raw dicomweb-client "
            f"{last['raw_dicomweb_client']:.0f}, C-GET job {last['c_get']:.0f}",
            flush=True,
        )
    medians = {key: statistics.median(values) for key, values in rates.items()}
    return {
        "medians": medians,
        "counts": counts,
        "ratio": medians["wado"] / medians["raw_dicomweb_client"],
        "ratio_c_get": medians["wado"] / medians["c_get"],
    }
