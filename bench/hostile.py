"""Benchmark of the query-file parser on the hostile corpus.

    .venv/bin/python bench/hostile.py [--runs 5]

Each file of tests/pulls/hostile_files.py (decompression bombs, deep JSON,
huge numbers and cells, repeated keys...) is parsed --runs times in this
process, alternating files; the median seconds of the slowest file and the
process's peak memory are printed. Target: every file answered (rows or named
problems) in under a second, peak memory under 300 MB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


def _peak_mb() -> float:
    status = Path("/proc/self/status").read_text().split("VmHWM:")[1]
    return int(status.split()[0]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    from pulls.queries.files import parse_query_file
    from tests.pulls.hostile_files import hostile_files

    corpus = hostile_files()
    seconds: dict[str, list[float]] = {name: [] for name, _ in corpus}
    for _ in range(args.runs):
        for name, data in corpus:
            start = time.perf_counter()
            parsed = parse_query_file(data, name=name, max_bytes=20 << 20)
            seconds[name].append(time.perf_counter() - start)
            assert parsed.ok or parsed.problems, name
    medians = sorted(((statistics.median(v), k) for k, v in seconds.items()), reverse=True)
    print(f"{len(corpus)} hostile files, {args.runs} runs each")
    for median, name in medians[:5]:
        print(f"  {name:40s} median {median * 1000:8.1f} ms")
    bombs = [(m, k) for m, k in medians if "bomb" in k]
    if bombs:
        print(f"decompression bombs: {len(bombs)}, slowest median {bombs[0][0] * 1000:.1f} ms")
    slowest = medians[0][0]
    peak = _peak_mb()
    print(f"slowest median {slowest:.3f} s (target < 1 s); peak memory {peak:.0f} MB (< 300 MB)")
    sys.exit(0 if slowest < 1 and peak < 300 else 1)


if __name__ == "__main__":
    main()
