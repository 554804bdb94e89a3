"""Profile the slowest stage (the live scorer) with pyinstrument; writes bench/profiles/scorer.txt.

Starts its own brokers like bench/run.py, fills the features topic, trains v1, then runs
`streamtrain score` under pyinstrument until every record is scored and stops it with SIGTERM.
RECORDS (default 200000, the size `make bench` compares the scorer with the plain loop at) sets the count.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from bench.run import REPO, Bench
from bench.stages import scoring_input
from streamtrain.kafka import read_topic
from streamtrain.settings import settings_env


def main(n: int = int(os.environ.get("RECORDS", "200000"))) -> None:
    bench = Bench(quick=True)
    bench.stack.up(create_topics=False)
    try:
        s, total = scoring_input(bench, n)
        out = REPO / "bench" / "profiles"
        out.mkdir(parents=True, exist_ok=True)
        env = settings_env(s, group_id="profile")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pyinstrument",
                "-o",
                str(out / "scorer.txt"),
                "-m",
                "streamtrain.cli.main",
                "score",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        t0 = time.monotonic()
        read_topic(s.kafka_bootstrap, s.topic_scores, until=lambda m: len(m) >= total, timeout=600)
        print(f"scored {total} records in {time.monotonic() - t0:.1f}s (incl. start-up)")
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        print(f"wrote {out / 'scorer.txt'}")
    finally:
        bench.stack.down()


if __name__ == "__main__":
    main()
