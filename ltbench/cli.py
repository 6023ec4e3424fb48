"""Command line: argument parsing only; the work happens in the modules it calls."""

import argparse
import importlib
import os
import sys

from ltbench.errors import UserError

DEFAULT_RESULTS = "results"


class ListArgument(argparse.Action):
    """A list flag: `--methods ce,focal`, `--methods ce focal` and a repeated flag all mean the same."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs="+", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, self.dest, None) or [])
        items += [part.strip() for value in values for part in value.split(",") if part.strip()]
        setattr(namespace, self.dest, items)


def build_parser() -> argparse.ArgumentParser:
    from ltbench import __version__
    from ltbench.settings import SETTINGS, SPEC_FIELDS

    parser = argparse.ArgumentParser(prog="ltbench", description="Long-tailed classification benchmark harness")
    parser.add_argument("--version", action="version", version=f"ltbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    listing = sub.add_parser("list", help="methods, datasets, backbones and presets; --settings: every setting")
    listing.add_argument("--settings", action="store_true",
                         help="every setting with its kind (protocol or execution), type, default and help")

    run = sub.add_parser("run", help="train and evaluate a grid of runs")
    run.add_argument("--methods", action=ListArgument, metavar="NAME", help="e.g. ce,focal (or ce focal)")
    run.add_argument("--dataset", "--datasets", dest="datasets", action=ListArgument, metavar="NAME",
                     help="e.g. cifar10_lt")
    run.add_argument("--if", dest="imbalance_factors", action=ListArgument, metavar="IF",
                     help="imbalance factors, e.g. 10,50,100")
    run.add_argument("--seeds", action=ListArgument, metavar="SEED", help="e.g. 0,1,2 (default 0)")
    for name in SPEC_FIELDS:  # the spec's own settings have flags of their own; values checked as --set's
        run.add_argument(f"--{name.replace('_', '-')}", dest=name, metavar=name.upper(), help=SETTINGS[name].help)
    run.add_argument("--preset", help="paper (published protocol, default), quick or smoke")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="any setting (`ltbench list --settings`); METHOD.KEY=VALUE for one method only, "
                     "KEY=VALUE where one method of the sweep has KEY")
    run.add_argument("--config", help="TOML sweep file with the same keys (flags win)")
    run.add_argument("--results-dir")
    run.add_argument("--data-root", help="where datasets live (default $LTBENCH_DATA or ~/.cache/ltbench/data)")
    run.add_argument("--data-option", dest="data_options", action="append", default=[], metavar="DATASET.KEY=VALUE",
                     help="where an image dataset's files are: image_root, split_dir, train_file, eval_file "
                     "(e.g. imagenet_lt.image_root=/datasets/imagenet)")
    run.add_argument("--device", choices=["auto", "cpu", "cuda"])
    run.add_argument("--dry-run", action="store_true", help="print the expanded grid and which runs exist")
    run.add_argument("--show-spec", action="store_true",
                     help="with --dry-run: every run's resolved settings, one JSON object a line")
    run.add_argument("--launcher", choices=["local", "slurm"], default="local")
    slurm = _optional("ltbench.launch.slurm")
    if slurm is not None:
        slurm.add_arguments(run)

    status = sub.add_parser("status", help="done, partial and failed runs in a results dir")
    status.add_argument("--results-dir", default=DEFAULT_RESULTS)

    fetch = sub.add_parser("fetch-data", help="make a dataset available offline")
    fetch.add_argument("dataset", help="a dataset that can be fetched: " + ", ".join(_fetchable()))
    fetch.add_argument("--data-root")
    fetch.add_argument("--allow-apt", action="store_true", help="as root, install Debian's package if needed")

    report = _optional("ltbench.report.cli")
    if report is not None:
        report.add_arguments(sub.add_parser("report", help="paper-style tables and figures from results/"))
    bench = _optional("ltbench.bench")
    if bench is not None:
        bench.add_arguments(sub.add_parser("bench", help="measure throughput and memory"))
    return parser


def _fetchable() -> list[str]:
    from ltbench import registry

    try:
        return [name for name, info in registry.datasets().items() if info.fetch is not None]
    except UserError:
        return []


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
            from ltbench.commands import list_everything, list_settings
            return list_settings() if args.settings else list_everything()
        if args.command == "run":
            from ltbench.commands import run
            return run(args)
        if args.command == "status":
            from ltbench.commands import status
            return status(args.results_dir)
        if args.command == "fetch-data":
            from ltbench.commands import fetch_data
            return fetch_data(args.dataset, args.data_root, args.allow_apt)
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
