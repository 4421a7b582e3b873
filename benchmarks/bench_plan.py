"""Cold wall time of `llmdeploy plan` beside `python -c "import click"` (the floor any click CLI pays).

Run: python benchmarks/bench_plan.py [--runs 15]
Prints medians and the ratio; the target is plan ≤ 0.5 s here. No assertion: a number to watch.
Also: an architecture without a closed form (Mixtral), counted once on the meta device (torch and
transformers imported), then read from the cached count by every later run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def cold(cmd: list[str], runs: int, *, fresh_cache: bool = False) -> list[float]:
    times = []
    for _ in range(runs):
        env = None
        if fresh_cache:  # an empty user cache: the parameter count is made again
            env = {**os.environ, "LLMDEPLOY_CACHE_DIR": tempfile.mkdtemp(prefix="bench-plan-")}
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    exe = shutil.which("llmdeploy")
    plan_cmd = [exe] if exe else [sys.executable, "-m", "llmdeploy.cli.main"]
    cases = {
        'python -c "import click"': [sys.executable, "-c", "import click"],
        "llmdeploy plan --mode reserved": plan_cmd + ["plan", "--mode", "reserved"],
        "llmdeploy plan --mode auto --json": plan_cmd + ["plan", "--mode", "auto", "--json"],
        "llmdeploy estimate flan-t5-xxl --json": plan_cmd + ["estimate", "flan-t5-xxl", "--json"],
    }
    results = {name: statistics.median(cold(cmd, args.runs)) for name, cmd in cases.items()}
    mixtral = plan_cmd + ["estimate", "mixtral-8x7b", "--json"]
    results["estimate mixtral-8x7b, first run (meta device)"] = statistics.median(cold(mixtral, max(3, args.runs // 5),
                                                                                          fresh_cache=True))
    subprocess.run(mixtral, check=True, stdout=subprocess.DEVNULL)  # count cached in the user cache
    results["estimate mixtral-8x7b, count cached"] = statistics.median(cold(mixtral, args.runs))
    base = results['python -c "import click"']
    print(f"{'command':48} {'median s':>9} {'x import click':>14}")
    for name, t in results.items():
        print(f"{name:48} {t:9.3f} {t / base:14.2f}")
    plan_t = results["llmdeploy plan --mode reserved"]
    print(f"\nplan cold wall time {plan_t:.3f} s (target <= 0.5 s): {'OK' if plan_t <= 0.5 else 'OVER TARGET'}")


if __name__ == "__main__":
    main()
