"""What `ltbench tune` costs beyond its trials' training: its own time per trial (the journal,
the sampler, the store's checks, the study summaries) against the training time of the
trial's run, and the trials an hour at --jobs 1.

    python benchmarks/tune_overhead.py --methods ce --dataset fashion_mnist_lt --if 100 \
        --preset quick --budget 3

The search runs in this process exactly as `ltbench tune` runs it (ltbench.tune.prepare,
then Search.run), into a fresh results dir, with each round's training timed around the
launcher call that `ltbench run` makes for the same specs (commands.train_here): that call is
the plain run of the trial's spec. The tuner's overhead is the search's wall time less that
training time. The retrain on seeds is ordinary runs and is not timed. The row goes to
results/bench/tune_overhead.csv.
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ltbench.cli import build_parser
from ltbench.environment import device_label, resolve_device
from ltbench.store import atomic_write_bytes, csv_bytes
from ltbench.tune import prepare

COLUMNS = ["methods", "preset", "budget", "trials", "search_s", "training_s", "overhead_s_per_trial",
           "run_s_per_trial", "overhead_pct", "trials_per_hour", "threads", "device"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/tune_overhead.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="ce")
    parser.add_argument("--dataset", default="fashion_mnist_lt")
    parser.add_argument("--if", dest="imbalance_factors", default="100")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--budget", default="3")
    parser.add_argument("--sampler", default="tpe")
    parser.add_argument("--out", default="results/bench/tune_overhead.csv")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tune-overhead-") as scratch:
        tune_args = build_parser().parse_args([
            "tune", "--methods", args.methods, "--dataset", args.dataset, "--if", args.imbalance_factors,
            "--preset", args.preset, "--budget", args.budget, "--sampler", args.sampler, "--jobs", "1",
            "--results-dir", scratch])
        search, _ = prepare(tune_args)
        training = []
        train = search.train

        def timed_train(todo, tag):
            began = time.perf_counter()
            try:
                return train(todo, tag)
            finally:
                training.append(time.perf_counter() - began)

        search.train = timed_train
        began = time.perf_counter()
        code = search.run()
        search_s = time.perf_counter() - began
        trials = len(search.cells) * search.budget
    if code:
        print(f"the search ended with exit status {code}")
        return code
    overhead = (search_s - sum(training)) / trials
    row = {"methods": args.methods, "preset": args.preset, "budget": search.budget, "trials": trials,
           "search_s": round(search_s, 2), "training_s": round(sum(training), 2),
           "overhead_s_per_trial": round(overhead, 3), "run_s_per_trial": round(sum(training) / trials, 2),
           "overhead_pct": round(100 * overhead / (sum(training) / trials), 2),
           "trials_per_hour": round(3600 * trials / search_s, 1), "threads": torch.get_num_threads(),
           "device": device_label(resolve_device("auto"))}
    atomic_write_bytes(Path(args.out), csv_bytes(COLUMNS, [row]))
    print("  ".join(f"{k} {row[k]}" for k in COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
