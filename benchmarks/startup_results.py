"""A results dir of many finished runs, to time `ltbench status` (and start-up) on.

    python benchmarks/startup_results.py DIR [--runs 200]

Trains one real run (ce, fashion_mnist_lt IF 100, smoke preset; a few seconds on a CPU) and
copies its folder as runs of further seeds: each copy's spec.json names its own seed, and so
its own run id, and its result.csv that run id and seed, so the store reads every copy as a
finished run of its own. The copies leave out checkpoint.pt, which a finished run's readers
never open.
"""

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

from ltbench.spec import RunSpec


def build(root: Path, runs: int) -> None:
    source_dir = root / ".source"
    subprocess.run([sys.executable, "-m", "ltbench.cli", "run", "--methods", "ce", "--dataset", "fashion_mnist_lt",
                    "--if", "100", "--preset", "smoke", "--results-dir", str(source_dir)], check=True)
    (source,) = [p for p in source_dir.iterdir() if (p / "result.csv").is_file()]
    spec = json.loads((source / "spec.json").read_text())
    with open(source / "result.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    for seed in range(runs):
        copy = {**spec, "seed": seed}
        run_id = RunSpec.from_dict(copy).run_id
        folder = root / run_id
        folder.mkdir()
        (folder / "spec.json").write_text(json.dumps(copy, indent=2))
        with open(folder / "result.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(row), lineterminator="\n")
            writer.writeheader()
            writer.writerow({**row, "run_id": run_id, "seed": seed})
        for name in ("per_class.csv", "history.csv"):
            shutil.copy(source / name, folder / name)
    shutil.rmtree(source_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="a folder that does not exist yet")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    if args.dir.exists():
        parser.error(f"{args.dir} exists: give a new folder")
    args.dir.mkdir(parents=True)
    build(args.dir, args.runs)
    print(f"{args.runs} finished runs in {args.dir}")


if __name__ == "__main__":
    main()
