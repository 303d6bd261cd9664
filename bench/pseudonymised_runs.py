"""bench/retrieve.py --pseudonymised: retrieval into a pseudonymised project
beside the same into an identifiable one, alternating, in the same run.

Both sides are whole jobs through the pipeline (job -> worker -> PACS -> the
C-GET association or the storage SCP -> project); the pseudonymised side
de-identifies every instance on its way in (pulls.deid). Target for C-GET:
>= 0.5x the identifiable side's instances/s.
"""

from __future__ import annotations

import statistics


def pseudonymised_runs(runs: int, *, node, owner, uids, run_pipeline, fresh_project) -> dict:
    from pulls.models import JobKind

    keys = ["get_identifiable", "get_pseudonymised", "move_identifiable", "move_pseudonymised"]
    rates: dict[str, list[float]] = {key: [] for key in keys}
    for run in range(1, runs + 1):
        for kind, method in ((JobKind.GET, "get"), (JobKind.MOVE, "move")):
            for mode in ("identifiable", "pseudonymised"):
                project = fresh_project(owner, f"{method}-{mode}-{run}", deidentification=mode)
                rates[f"{method}_{mode}"].append(
                    run_pipeline(kind, node, owner, project, uids)["ips"]
                )
        last = {key: values[-1] for key, values in rates.items()}
        print(
            f"run {run}: C-GET {last['get_identifiable']:.0f} identifiable, "
            f"{last['get_pseudonymised']:.0f} pseudonymised inst/s; C-MOVE "
            f"{last['move_identifiable']:.0f}, {last['move_pseudonymised']:.0f}",
            flush=True,
        )
    medians = {key: statistics.median(values) for key, values in rates.items()}
    return {
        "medians": medians,
        "ratio_get": medians["get_pseudonymised"] / medians["get_identifiable"],
        "ratio_move": medians["move_pseudonymised"] / medians["move_identifiable"],
    }
