"""Where a benchmark writes: --work, or bench/results/<name>/.

Read from the command line before Django is set up, since the settings take
their folders (the database, staging, storage) from the environment the
benchmark sets from it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def default_work(name: str) -> Path:
    return REPO / "bench" / "results" / name


def work_dir(name: str) -> Path:
    """--work if given, else ``default_work(name)``; absolute."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--work", type=Path, default=default_work(name))
    return early.parse_known_args()[0].work.resolve()
