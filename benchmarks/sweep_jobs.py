"""Sweep throughput by --jobs: the same sweep under `ltbench run --jobs 1` and `--jobs N`, each
into a fresh results dir, timed from start to end of the command.

    python benchmarks/sweep_jobs.py --methods ce,focal --dataset fashion_mnist_lt --if 100 \
        --seeds 0,1 --preset quick --jobs 2 --rounds 2

Each round times both settings in turn (the order swaps every round, so a machine that
slows down does not always slow the same one); the ratio is --jobs 1's time over --jobs N's
in the same round: above 1, N jobs at once finish the sweep sooner. Each setting gets the
threads this process may use (OMP_NUM_THREADS, else every core): --jobs 1 all of them,
--jobs N a share each. Leave OMP_NUM_THREADS unset to measure the machine's defaults. The
rows (and the mean top-1 of each sweep) go to results/bench/sweep_jobs.csv.
"""

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ltbench.store import atomic_write_bytes, csv_bytes

COLUMNS = ["round", "jobs", "seconds", "runs", "runs_per_hour", "vs_jobs_1", "mean_top1", "threads", "device"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/sweep_jobs.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="ce,focal")
    parser.add_argument("--dataset", default="fashion_mnist_lt")
    parser.add_argument("--if", dest="imbalance_factors", default="100")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--jobs", type=int, default=2, help="the N compared with --jobs 1 (default 2)")
    parser.add_argument("--devices", help="passed to ltbench run (default: every visible GPU, else the CPU)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", default="results/bench/sweep_jobs.csv")
    args = parser.parse_args(argv)
    if args.jobs < 2 or args.rounds < 1:
        parser.error(f"--jobs must be at least 2 and --rounds at least 1, got {args.jobs} and {args.rounds}")
    sweep = ["--methods", args.methods, "--dataset", args.dataset, "--if", args.imbalance_factors,
             "--seeds", args.seeds, "--preset", args.preset, *(f"--set={item}" for item in args.overrides)]
    if args.devices:
        sweep += ["--devices", args.devices]
    rows = []
    with tempfile.TemporaryDirectory(prefix="sweep-jobs-") as scratch:
        for round_ in range(1, args.rounds + 1):
            order = (1, args.jobs) if round_ % 2 else (args.jobs, 1)
            timed = {jobs: time_sweep(sweep, jobs, Path(scratch) / f"r{round_}-jobs{jobs}") for jobs in order}
            for jobs in (1, args.jobs):
                row = {"round": round_, "jobs": jobs, **timed[jobs]}
                row["vs_jobs_1"] = round(timed[1]["seconds"] / timed[jobs]["seconds"], 3)
                rows.append(row)
                print("  ".join(f"{k} {row[k]}" for k in COLUMNS), flush=True)
    atomic_write_bytes(Path(args.out), csv_bytes(COLUMNS, rows))
    ratios = [r["vs_jobs_1"] for r in rows if r["jobs"] == args.jobs]
    print(f"--jobs {args.jobs} vs --jobs 1: {statistics.median(ratios):.2f}x the sweep throughput (median of "
          f"{len(ratios)} round(s), range {min(ratios):.2f}-{max(ratios):.2f}); rows in {args.out}")
    return 0


def time_sweep(sweep: list[str], jobs: int, results: Path) -> dict:
    """One `ltbench run` of the sweep into a fresh results dir: its time and what it produced."""
    command = [sys.executable, "-m", "ltbench.cli", "run", *sweep, "--jobs", str(jobs), "--results-dir", str(results)]
    start = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if finished.returncode != 0:
        sys.exit(f"the sweep with --jobs {jobs} failed (exit {finished.returncode}):\n{finished.stdout[-3000:]}"
                 f"{finished.stderr[-3000:]}")
    rows = [row for path in sorted(results.glob("*/result.csv")) for row in csv.DictReader(path.open())]
    return {"seconds": round(seconds, 2), "runs": len(rows), "runs_per_hour": round(len(rows) * 3600 / seconds, 1),
            "mean_top1": round(statistics.mean(float(r["top1"]) for r in rows), 4),
            "threads": ",".join(sorted({r["threads"] for r in rows})),
            "device": ",".join(sorted({r["device"] for r in rows}))}


if __name__ == "__main__":
    sys.exit(main())
