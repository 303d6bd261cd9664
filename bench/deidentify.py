"""Benchmark of `manage.py deidentify` beside dicognito and deid, on the same files.

    .venv/bin/python bench/deidentify.py [--files 10000] [--runs 5] [--work DIR]

--files synthetic CT/MR instances (pulls.sandbox.synthetic, 64x64) are
pseudonymised, read from a folder and written to another, by each tool in
turn, alternating, one process each (the same number for every tool), timed
from the command's start to its end (start-up included, as a person running it
waits for it):

- pacsnpull: `manage.py deidentify --project bench SRC DST` (PS3.15 Basic
  Profile with the dates option, keyed pseudonyms, the mapping in its
  database);
- dicognito (its command line, seeded), and deid (its default recipe, through
  its Python API: it has no folder-to-folder command), pinned below and
  installed into a virtual environment of their own under the work folder
  (from the package registry, once).

Target: pacsnpull at least as fast as the faster of the two (median files/s).
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

from workdir import REPO, default_work  # bench/ is sys.path[0]

PEERS = ["dicognito==0.19.0", "deid==0.4.13", "pydicom==3.0.2"]
DEID_RUNNER = """
import logging, sys
from pathlib import Path
import pydicom
from deid.config import DeidRecipe
from deid.dicom.parser import DicomParser
logging.disable(logging.WARNING)
source, out = Path(sys.argv[1]), Path(sys.argv[2])
recipe = DeidRecipe()
out.mkdir(parents=True, exist_ok=True)
for n, path in enumerate(sorted(p for p in source.rglob("*") if p.is_file())):
    parser = DicomParser(pydicom.dcmread(path), recipe=recipe)
    parser.parse()
    parser.dicom.save_as(out / f"{n:06d}.dcm")
"""


def _peers(work: Path) -> Path:
    """A virtual environment with the peers (made once)."""
    venv = work / "peers-venv"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if not marker.exists() or marker.read_text() != " ".join(PEERS):
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PEERS], check=True)
        marker.write_text(" ".join(PEERS))
    return python


def _timed(command: list[str], out: Path, env: dict[str, str] | None = None) -> tuple[float, int]:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    written = sum(1 for p in out.rglob("*") if p.is_file() and p.suffix == ".dcm")
    return seconds, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--work", type=Path, default=default_work("deidentify"))
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    peers = _peers(work)

    env = {**os.environ, "PACSNPULL_INSTANCE_DIR": str(work / "instance"),
           "DJANGO_SETTINGS_MODULE": "portal.settings"}  # fmt: skip
    (work / "instance").mkdir(exist_ok=True)
    data = work / "data"
    if not data.exists():
        patients = max(1, args.files // 100)
        subprocess.run(
            [sys.executable, "-m", "pulls.sandbox.synthetic", str(data), "--patients",
             str(patients), "--studies", "2", "--series", "2", "--instances", "25"],
            check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    (data / "manifest.csv").unlink(missing_ok=True)  # DICOM files only, for every tool
    files = sum(1 for p in data.rglob("*.dcm"))
    setup = (
        "import django; django.setup()\n"
        "from django.core.management import call_command\n"
        "call_command('migrate', verbosity=0)\n"
        "from pulls.models import Project\n"
        "Project.objects.get_or_create(slug='bench', defaults={'name': 'Bench'})\n"
    )
    subprocess.run([sys.executable, "-c", setup], check=True, cwd=REPO, env=env)

    sides = {
        "pacsnpull": lambda out: _timed(
            [sys.executable, "manage.py", "deidentify", "--project", "bench", str(data), str(out)],
            out,
            env,
        ),  # fmt: skip
        "dicognito": lambda out: _timed(
            [
                str(peers),
                "-m",
                "dicognito",
                "--quiet",
                "--seed",
                "bench",
                "-o",
                str(out),
                str(data),
            ],
            out,
        ),  # fmt: skip
        "deid": lambda out: _timed([str(peers), "-c", DEID_RUNNER, str(data), str(out)], out),
    }
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for run in range(1, args.runs + 1):
        line = []
        for name, side in sides.items():
            seconds, written = side(work / f"out-{name}")
            assert written == files, (name, written, files)
            rates[name].append(files / seconds)
            line.append(f"{name} {files / seconds:.0f}")
        print(f"run {run}: " + ", ".join(line) + " files/s", flush=True)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    faster = max(medians["dicognito"], medians["deid"])
    ratio = medians["pacsnpull"] / faster
    (work / "deidentify.json").write_text(json.dumps({"files": files, "medians": medians}))
    print(
        f"\nmedian of {args.runs} runs, {files} files, one process each: "
        + ", ".join(f"{name} {rate:.0f} files/s" for name, rate in medians.items())
        + f"\npacsnpull / the faster peer: {ratio:.2f} (target >= 1)"
    )


if __name__ == "__main__":
    main()
