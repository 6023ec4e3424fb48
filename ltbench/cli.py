"""Command line: argument parsing only; the work happens in the modules it calls."""

import argparse
import importlib
import os
import sys

from ltbench.errors import UserError

DEFAULT_RESULTS = "results"


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ltbench", description="Long-tailed classification benchmark harness")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="methods, datasets, backbones and presets")

    run = sub.add_parser("run", help="train and evaluate a grid of runs")
    run.add_argument("--methods", type=comma_list, help="comma list, e.g. ce,focal")
    run.add_argument("--dataset", "--datasets", dest="datasets", type=comma_list, help="comma list, e.g. cifar10_lt")
    run.add_argument("--if", dest="imbalance_factors", type=comma_list, help="imbalance factors, e.g. 10,50,100")
    run.add_argument("--seeds", type=comma_list, help="comma list (default 0)")
    run.add_argument("--profile", choices=["exp", "step"])
    run.add_argument("--backbone")
    run.add_argument("--epochs", type=int)
    run.add_argument("--batch-size", type=int)
    run.add_argument("--n-max", type=int, help="head-class size, to run a reduced dataset")
    run.add_argument("--preset", help="paper (published protocol, default), quick or smoke")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="any method or trainer hyperparameter; METHOD.KEY=VALUE for one method only")
    run.add_argument("--config", help="TOML sweep file with the same keys (flags win)")
    run.add_argument("--results-dir")
    run.add_argument("--data-root", help="where datasets live (default $LTBENCH_DATA or ~/.cache/ltbench/data)")
    run.add_argument("--data-option", dest="data_options", action="append", default=[], metavar="DATASET.KEY=VALUE",
                     help="where an image dataset's files are: image_root, split_dir, train_file, eval_file "
                     "(e.g. imagenet_lt.image_root=/datasets/imagenet)")
    run.add_argument("--device", choices=["auto", "cpu", "cuda"])
    run.add_argument("--dry-run", action="store_true", help="print the expanded grid and which runs exist")
    run.add_argument("--launcher", choices=["local", "slurm"], default="local")
    slurm = _optional("ltbench.launch.slurm")
    if slurm is not None:
        slurm.add_arguments(run)

    status = sub.add_parser("status", help="done, partial and failed runs in a results dir")
    status.add_argument("--results-dir", default=DEFAULT_RESULTS)

    fetch = sub.add_parser("fetch-data", help="make a dataset available offline")
    fetch.add_argument("dataset", choices=["fashion_mnist"])
    fetch.add_argument("--data-root")
    fetch.add_argument("--allow-apt", action="store_true", help="as root, install Debian's package if needed")

    report = _optional("ltbench.report.cli")
    if report is not None:
        report.add_arguments(sub.add_parser("report", help="paper-style tables and figures from results/"))
    bench = _optional("ltbench.bench")
    if bench is not None:
        bench.add_arguments(sub.add_parser("bench", help="measure throughput and memory"))
    return parser


def _optional(module: str):
    """Subcommands whose modules may be absent from a trimmed install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            from ltbench.commands import list_everything
            return list_everything()
        if args.command == "run":
            from ltbench.commands import run
            return run(args)
        if args.command == "status":
            from ltbench.commands import status
            return status(args.results_dir)
        if args.command == "fetch-data":
            from ltbench.data.sources import data_root, fetch_fashion_mnist
            fetch_fashion_mnist(data_root(args.data_root), allow_apt=args.allow_apt)
            return 0
        if args.command == "report":
            return _optional("ltbench.report.cli").run(args)
        if args.command == "bench":
            return _optional("ltbench.bench").run(args)
    except UserError as exc:
        print(f"ltbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nltbench: interrupted; finished runs and the last epoch checkpoints are kept. "
              "Run the same command again to resume.", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
