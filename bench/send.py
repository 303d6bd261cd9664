"""Benchmark of sending a project's files to a destination node, against DCMTK's storescu.

    .venv/bin/python bench/send.py [--instances 3200] [--size 64] [--runs 5] [--work DIR]

A project holding --instances synthetic instances (pulls.sandbox.synthetic: a
study of 4 series of 20 instances per patient) is sent to a second Orthanc
(its own, empty before each run) by pacsnpull's sending (pulls.delivery.sending:
one association per study, then a C-FIND per study to count what arrived),
alternating with `storescu +sd +r` of the same folder (one association for all
the files, no check; TCP_NODELAY=1, without which DCMTK waits on Nagle's
algorithm at every instance); the median of --runs each, timed from the start to the
end of the transfer.

Target: pacsnpull at least 0.9x storescu's speed (storescu's median time over pacsnpull's).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from workdir import REPO, work_dir  # bench/ is sys.path[0]

WORK = work_dir("send")
sys.path.insert(0, str(REPO))
os.environ.update(
    PACSNPULL_INSTANCE_DIR=str(WORK / "instance"),
    DJANGO_SETTINGS_MODULE="portal.settings",
    PACSNPULL_DEMO_PACS="false",
)

from fixtures import fresh_database, owner_project_node, project_with_files  # noqa: E402

from pulls.sandbox.orthanc import Orthanc  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=3200)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--work", type=Path)  # read by work_dir()
    args = parser.parse_args()

    fresh_database(WORK)
    from pulls.delivery.sending import sending_create, sending_run
    from pulls.models import PacsNode, SendingStatus

    owner, project, _ = owner_project_node()
    made = project_with_files(project, args.instances, size=args.size)
    n = len(made.instances)
    storescu = shutil.which("storescu")
    with Orthanc(
        WORK / "destination",
        aet="DEST",
        modalities={"portal": ("PACSNPULL", "127.0.0.1", 104)},  # may C-FIND (the check)
    ) as dest:
        node = PacsNode.objects.create(
            name="DEST", ae_title="DEST", host="127.0.0.1", port=dest.dicom_port,
            is_destination=True, max_associations=4, queries_per_minute=0,
        )  # fmt: skip
        node.granted_users.add(owner)
        ours, theirs = [], []
        for _ in range(args.runs):
            dest.clear()
            sending = sending_create(project=project, destination=node, user=owner)
            started = time.perf_counter()
            sending_run(sending.pk)
            ours.append(time.perf_counter() - started)
            sending.refresh_from_db()
            assert sending.status == SendingStatus.DONE, sending.status
            assert dest.instance_count() == n

            dest.clear()
            started = time.perf_counter()
            subprocess.run(
                [storescu, "+sd", "+r", "-aet", "PACSNPULL", "-aec", "DEST", "127.0.0.1",
                 str(dest.dicom_port), str(project.storage_dir)],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env={**os.environ, "TCP_NODELAY": "1"},  # DCMTK at its best (no Nagle)
            )  # fmt: skip
            theirs.append(time.perf_counter() - started)
            assert dest.instance_count() == n
    p, s = statistics.median(ours), statistics.median(theirs)
    print(f"{n} instances in {n // 80} studies, {sum(i.size for i in made.instances) / 1e6:.0f} MB")
    print(
        f"pacsnpull: median {p:.2f} s ({n / p:.0f} instances/s)  runs {[round(x, 2) for x in ours]}"
    )
    runs = [round(x, 2) for x in theirs]
    print(f"storescu:  median {s:.2f} s ({n / s:.0f} instances/s)  runs {runs}")
    print(f"ratio (storescu / pacsnpull): {s / p:.2f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
