"""Run the fuzz targets (bench/fuzz/targets.py) with atheris, each for a time budget: `make fuzz`.

    python -m bench.fuzz.run [--seconds 120] [--only pg_startup,mysql_command] [--jobs 1]

Each target runs in its own process on a working corpus (.fuzz/corpus/NAME, started from the
seeds in bench/fuzz/seeds/NAME, which are bytes real clients and servers sent), with crashes
written to .fuzz/crashes/NAME/. A line per target reports executions, seconds and crashes; the
exit status is 1 when any target crashed. Without atheris, a loop of random
and mutated seed inputs runs instead for the same budget (slower, no coverage guidance).
A crash is a bug: fix it, and add its bytes to tests/fuzz_regressions/NAME/ (tests/test_fuzz_targets.py
replays them and every seed).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SEEDS = Path(__file__).resolve().parent / "seeds"
WORK = ROOT / ".fuzz"


def _atheris_available() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def _run_atheris(name: str, seconds: int) -> tuple[int, float, int, str]:
    corpus = WORK / "corpus" / name
    crashes = WORK / "crashes" / name
    corpus.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "bench.fuzz.worker", name, str(corpus), str(SEEDS / name),
               f"-max_total_time={seconds}", f"-artifact_prefix={crashes}/", "-max_len=4096",
               "-timeout=10", "-rss_limit_mb=4096", "-print_final_stats=1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.monotonic()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, errors="replace")
    elapsed = time.monotonic() - started
    log = proc.stdout + proc.stderr
    (WORK / f"{name}.log").write_text(log)
    runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log) or re.findall(r"Done (\d+) runs", log)
    crashed = len(list(crashes.iterdir()))
    return int(runs[-1]) if runs else 0, elapsed, crashed, "" if proc.returncode == 0 else log[-3000:]


def _run_hypothesis(name: str, seconds: int) -> tuple[int, float, int, str]:
    from bench.fuzz.fallback import fuzz_for
    started = time.monotonic()
    runs, failure = fuzz_for(name, seconds, SEEDS / name, WORK / "crashes" / name)
    return runs, time.monotonic() - started, int(failure is not None), failure or ""


def main() -> int:
    from bench.fuzz.targets import TARGETS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", "120")),
                        help="time budget per target (default 120, or $FUZZ_SECONDS)")
    parser.add_argument("--only", default="", help="comma-separated target names")
    parser.add_argument("--engine", choices=["atheris", "hypothesis"], default=None)
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown targets: {', '.join(unknown)} (known: {', '.join(TARGETS)})")
    engine = args.engine or ("atheris" if _atheris_available() else "hypothesis")
    print(f"fuzzing {len(names)} targets with {engine}, {args.seconds}s each")
    failed = False
    total = 0
    for name in names:
        run = _run_atheris if engine == "atheris" else _run_hypothesis
        runs, elapsed, crashes, tail = run(name, args.seconds)
        total += runs
        print(f"{name:18} {runs:>10,} executions in {elapsed:6.1f}s ({runs / max(elapsed, 1e-9):8,.0f}/s)"
              f"  crashes: {crashes}", flush=True)
        if crashes or tail:
            failed = True
            if tail:
                print(tail)
    print(f"total: {total:,} executions")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
