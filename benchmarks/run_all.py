"""Run every benchmark in this folder, one after another (same flags for all).

python benchmarks/run_all.py            # full runs, figures appended to RESULTS.md
python benchmarks/run_all.py --quick    # the CI smoke test (add --no-record to keep
                                        # RESULTS.md unchanged)

A script that runs past its time limit (30 minutes, 10 with --quick) is stopped and counted as
failed, so a hang never stalls CI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    "bench_sweep.py",
    "bench_overhead.py",
    "bench_cache.py",
    "bench_memory.py",
    "bench_airalo_sdk.py",
    "bench_scaleout.py",
    "bench_monitor.py",
    "bench_path.py",
]


def main() -> int:
    failed = []
    limit = 600 if "--quick" in sys.argv else 1800
    for script in SCRIPTS:
        print(f"\n=== {script} {' '.join(sys.argv[1:])}", flush=True)
        try:
            code = subprocess.call(
                [sys.executable, str(HERE / script), *sys.argv[1:]], timeout=limit
            )
        except subprocess.TimeoutExpired:
            print(f"{script}: stopped after {limit} s", flush=True)
            code = 1
        if code:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
