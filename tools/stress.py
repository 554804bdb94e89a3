"""Races found before CI finds them: run the tests that wait on timing several times in a row while
another process keeps every core busy, and print how often each passed.

    python tools/stress.py                       # the fault tier and the timing e2e tests, 5 runs
    python tools/stress.py --runs 3 tests/score  # any pytest selection
    python tools/stress.py --no-hog -m faults    # without the CPU hog

Each run is a whole pytest session (brokers started anew, as in CI); results are read from pytest's
JUnit XML. Exit 1 when any test failed in any run.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: What CI has failed on under load before: the fault tier and the e2e tests that wait on timing.
DEFAULT_SELECTION = [
    "-m",
    "faults or e2e",
    "tests/faults",
    "tests/score/test_scorer_e2e.py",
    "tests/ingest/test_bridge_e2e.py",
    "tests/replay/test_topics_e2e.py",
]
HOG = "import os\nwhile True:\n    os.urandom(64)\n"


@contextlib.contextmanager
def cpu_hog(processes: int):
    """``processes`` busy loops at normal priority: the tests compete for every core as on a shared machine."""
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(processes)]
    try:
        yield
    finally:
        for h in hogs:
            h.terminate()
        for h in hogs:
            h.wait(10)


def outcomes(junit: Path) -> dict[str, bool]:
    """{test id: passed} of one run (skipped tests are left out)."""
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
        if case.find("skipped") is not None:
            continue
        out[name] = case.find("failure") is None and case.find("error") is None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="pytest sessions in a row (default 5)")
    parser.add_argument("--no-hog", dest="hog", action="store_false", help="run without the CPU hog")
    parser.add_argument(
        "--hog-processes", type=int, default=os.cpu_count() or 2, help="busy loops (default: one per core)"
    )
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="pytest selection (default: faults + timing e2e)")
    args = parser.parse_args(argv)
    selection = args.pytest_args or DEFAULT_SELECTION
    passes: collections.Counter[str] = collections.Counter()
    runs: collections.Counter[str] = collections.Counter()
    with tempfile.TemporaryDirectory(prefix="streamtrain-stress-") as tmp:
        for run in range(1, args.runs + 1):
            junit = Path(tmp) / f"run{run}.xml"
            started = time.monotonic()
            with cpu_hog(args.hog_processes if args.hog else 0):
                subprocess.run(
                    [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *selection],
                    cwd=ROOT,
                    check=False,
                )
            if not junit.exists():
                print(f"run {run}: pytest wrote no results", file=sys.stderr)
                return 1
            result = outcomes(junit)
            for name, ok in result.items():
                runs[name] += 1
                passes[name] += ok
            failed = sorted(n for n, ok in result.items() if not ok)
            print(
                f"run {run}/{args.runs}: {len(result) - len(failed)} passed, {len(failed)} failed "
                f"in {time.monotonic() - started:.0f} s{' under the CPU hog' if args.hog else ''}",
                flush=True,
            )
    width = max((len(n) for n in runs), default=4)
    print(f"\n{'test'.ljust(width)}  passed")
    for name in sorted(runs, key=lambda n: (passes[n] - runs[n], n)):
        print(f"{name.ljust(width)}  {passes[name]} of {runs[name]}")
    return 0 if all(passes[n] == runs[n] for n in runs) and runs else 1


if __name__ == "__main__":
    sys.exit(main())
