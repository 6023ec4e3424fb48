"""Command line: argument parsing only; the work happens in the modules it calls."""

import argparse
import csv
import importlib
import json
import sys
import tomllib
from pathlib import Path

from ltbench.errors import CorruptFile, UserError

DEFAULT_RESULTS = "results"


class Parser(argparse.ArgumentParser):
    """argparse's own errors in ltbench's one-line form (not the whole usage block) and exit 2."""

    def error(self, message: str):
        self.exit(2, f"ltbench: error: {message}\n  hint: see `{self.prog} --help`\n")

    def format_help(self) -> str:
        # help that reads a registry is written when --help prints it, so that building the
        # parser (every command's start) reads none
        for action in self._actions:
            if getattr(action, "help_from", None) is not None:
                action.help = action.help_from()
        return super().format_help()


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

    parser = Parser(prog="ltbench", description="Long-tailed classification benchmark harness")
    parser.add_argument("--version", action="version", version=f"ltbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    listing = sub.add_parser("list", help="methods, datasets, backbones and presets; --settings: every setting; "
                             "METHOD: its protocol card")
    listing.add_argument("method", nargs="?", metavar="METHOD",
                         help="a method's protocol card: every setting of its paper protocol on each dataset family, "
                         "and where each value comes from")
    listing.add_argument("--preset", default="paper", help="the preset whose values a METHOD's card shows (default: paper)")
    listing.add_argument("--settings", action="store_true",
                         help="every setting with its kind (protocol or execution), type, default and help")

    run = sub.add_parser("run", help="train and evaluate a grid of runs")
    grid_arguments(run, seeds_help="e.g. 0,1,2 (default 0)")
    run.add_argument("--config", help="TOML sweep file with the same keys (flags win)")
    run.add_argument("--dry-run", action="store_true", help="print the expanded grid and which runs exist")
    run.add_argument("--show-spec", action="store_true",
                     help="with --dry-run: every run's resolved settings, one JSON object a line")
    run.add_argument("--tag", metavar="NAME",
                     help="experiment tag recorded in the result row of every run this sweep trains; "
                     "`ltbench report --tag NAME` keeps only those rows. A tag annotates runs and is not part of "
                     "the run id: a run already done (under another tag or none) is reused and keeps its row")
    launcher_arguments(run)

    tune = sub.add_parser("tune", help="an equal-budget hyperparameter search per method (Optuna), each trial a run "
                          "scored on the validation split; then the best settings retrained on --seeds")
    grid_arguments(tune, seeds_help="the seeds the best settings and the paper defaults are trained on "
                   "(default 0,1,2)")
    tune.add_argument("--budget", required=True, metavar="N",
                      help="trials per method and cell, the same for every method; a rerun with a larger budget "
                      "adds the difference, one with the same budget trains nothing")
    tune.add_argument("--sampler", default="tpe", metavar="NAME", help="tpe (default) or random")
    tune.add_argument("--sampler-seed", default="0", metavar="N", help="seeds the sampler's draws (default 0)")
    tune.add_argument("--trial-seed", metavar="SEED",
                      help="the seed every trial trains on (default 1000, outside --seeds: the settings are "
                      "chosen on runs the comparison never reads)")
    launcher_arguments(tune)
    tune.set_defaults(config=None, tag=None)

    status = sub.add_parser("status", help="done, partial and failed runs in a results dir")
    status.add_argument("--results-dir", default=DEFAULT_RESULTS)

    show = sub.add_parser("show", help="one run's spec, provenance, result and history")
    show.add_argument("run_id", metavar="RUN_ID", help="a run id, or its first characters if no other run shares them")
    show.add_argument("--results-dir", default=DEFAULT_RESULTS)

    split = sub.add_parser("split", help="export a long-tailed training split (image indices, labels, class "
                           "counts, fingerprint) as JSON, to train on the same images elsewhere")
    split.add_argument("dataset", nargs="?", metavar="DATASET", help="e.g. cifar10_lt")
    split.add_argument("--if", dest="imbalance_factor", metavar="IF",
                       help="imbalance factor, e.g. 100 (datasets published with their split have their own)")
    split.add_argument("--profile", metavar="PROFILE", help="exp (default) or step")
    split.add_argument("--n-max", dest="n_max", metavar="N",
                       help="head-class size (default: the dataset's paper value; the smoke and quick presets "
                       "use smaller ones: `ltbench show RUN_ID` gives a run's, or use --run)")
    split.add_argument("--val-per-class", dest="val_per_class", metavar="N",
                       help="validation images per class (default: the dataset's own, as a run's val_per_class)")
    split.add_argument("--run", metavar="RUN_ID", help="the split a run of --results-dir trained on (its dataset, "
                       "IF, profile, n_max and val_per_class), checked against the fingerprint the run recorded")
    split.add_argument("--results-dir", default=DEFAULT_RESULTS, help="with --run: where the run is")
    split.add_argument("--data-root", help="where datasets live (default $LTBENCH_DATA or ~/.cache/ltbench/data)")
    split.add_argument("--out", metavar="FILE", help="the JSON file to write (default split_<dataset>_if<IF>"
                       "[_<profile>]_nmax<N>.json here; - for standard output)")

    evaluate = sub.add_parser("evaluate", help="add test-set predictions (for calibration) to finished runs from "
                              "their checkpoints, without training them again")
    evaluate.add_argument("--results-dir", default=DEFAULT_RESULTS)
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    evaluate.add_argument("--data-root", help="where datasets live (default $LTBENCH_DATA or ~/.cache/ltbench/data)")
    evaluate.add_argument("--data-option", dest="data_options", action="append", default=[],
                          metavar="DATASET.KEY=VALUE", help="where an image dataset's files are, as for run")
    launcher_arguments(evaluate, what="evaluations")

    fetch = sub.add_parser("fetch-data", help="make a dataset available offline")
    fetch.add_argument("dataset", help="a dataset that can be fetched").help_from = (
        lambda: "a dataset that can be fetched: " + ", ".join(_fetchable()))
    fetch.add_argument("--data-root")
    fetch.add_argument("--allow-apt", action="store_true", help="as root, install Debian's package if needed")

    report = _optional("ltbench.report.cli")
    if report is not None:
        report.add_arguments(sub.add_parser("report", help="paper-style tables and figures from results/"))
    bench = _optional("ltbench.bench")
    if bench is not None:
        bench.add_arguments(sub.add_parser("bench", help="measure throughput and memory"))
    return parser


def grid_arguments(parser, seeds_help: str) -> None:
    """The flags that say which runs a command trains (`run`, `tune`)."""
    from ltbench.settings import SETTINGS, SPEC_FIELDS

    parser.add_argument("--methods", action=ListArgument, metavar="NAME", help="e.g. ce,focal (or ce focal)")
    parser.add_argument("--dataset", "--datasets", dest="datasets", action=ListArgument, metavar="NAME",
                        help="e.g. cifar10_lt")
    parser.add_argument("--if", dest="imbalance_factors", action=ListArgument, metavar="IF",
                        help="imbalance factors, e.g. 10,50,100")
    parser.add_argument("--seeds", action=ListArgument, metavar="SEED", help=seeds_help)
    for name in SPEC_FIELDS:  # the spec's own settings have flags of their own; values checked as --set's
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, metavar=name.upper(), help=SETTINGS[name].help)
    parser.add_argument("--preset", help="paper (published protocol, default), quick or smoke")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="any setting (`ltbench list --settings`); METHOD.KEY=VALUE for one method only (or for "
                        "the stage 1 METHOD of a two-stage method), KEY=VALUE where one method of the sweep has KEY")
    parser.add_argument("--results-dir")
    parser.add_argument("--data-root", help="where datasets live (default $LTBENCH_DATA or ~/.cache/ltbench/data)")
    parser.add_argument("--data-option", dest="data_options", action="append", default=[],
                        metavar="DATASET.KEY=VALUE",
                        help="where an image dataset's files are: image_root, split_dir, train_file, eval_file "
                        "(e.g. imagenet_lt.image_root=/datasets/imagenet)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])


def launcher_arguments(parser, what: str = "runs") -> None:
    """Where the runs train (or are evaluated): this machine (--jobs, --devices) or Slurm."""
    parser.add_argument("--jobs", metavar="N", help=f"{what} at once on this machine, each a process of its own "
                        "(default: one per device of --devices on GPUs; 1 on a CPU-only machine, using every core)")
    parser.add_argument("--devices", action=ListArgument, metavar="DEVICE",
                        help="where the jobs of --jobs run, in turn: cuda:0,cuda:1 (or 0,1), cuda (every visible "
                        "GPU) or cpu; a device named twice gets twice the jobs (default: every visible GPU, else "
                        "the CPU)")
    parser.add_argument("--launcher", choices=["local", "slurm"], default="local",
                        help=f"local (default) or slurm: the {what} as one Slurm job array")
    slurm = _optional("ltbench.launch.slurm_options")
    if slurm is not None:
        slurm.add_arguments(parser)


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


def check_paths(args) -> None:
    """Folder arguments that would make a command write where the user did not mean to."""
    folders = ("results_dir", "out") if args.command == "report" else ("results_dir",)
    for flag in folders:
        value = getattr(args, flag, None)
        if value is not None and not value.strip():
            raise UserError(f"--{flag.replace('_', '-')} is empty",
                            hint=f"give a folder, e.g. --{flag.replace('_', '-')} "
                            f"{'results' if flag == 'results_dir' else 'reports'}")
    if args.command != "report":
        return
    if not Path(args.results_dir).is_dir():
        raise UserError(f"results dir {args.results_dir} does not exist",
                        hint="run a sweep first, or pass --results-dir with the folder that holds the run folders")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a file, not a folder",
                        hint="give the folder the report goes to, e.g. --out reports")


def fail(message: str, hint: str | None = None) -> int:
    """The one form every expected failure takes: one line, an optional hint line, exit 2."""
    print(f"ltbench: error: {' '.join(str(message).split())}", file=sys.stderr)
    if hint:
        print(f"  hint: {' '.join(hint.split())}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_paths(args)
        if args.command == "list":
            from ltbench.commands import list_everything, list_settings, show_method
            if args.method:
                return show_method(args.method, args.preset)
            return list_settings() if args.settings else list_everything()
        if args.command == "run":
            from ltbench.commands import run
            return run(args)
        if args.command == "tune":
            from ltbench.tune import tune
            return tune(args)
        if args.command == "status":
            from ltbench.status import status
            return status(args.results_dir)
        if args.command == "show":
            from ltbench.display import console
            from ltbench.show import show
            return show(args.results_dir, args.run_id, console)
        if args.command == "split":
            from ltbench.progress import console
            from ltbench.split_export import export_split
            from ltbench.sweep_args import data_root_of
            args.data_root = data_root_of(args.data_root)  # --data-root, else $LTBENCH_DATA
            return export_split(args, console)
        if args.command == "evaluate":
            from ltbench.commands import evaluate
            return evaluate(args)
        if args.command == "fetch-data":
            from ltbench.commands import fetch_data
            return fetch_data(args.dataset, args.data_root, args.allow_apt)
        if args.command == "report":
            return _optional("ltbench.report.cli").run(args)
        if args.command == "bench":
            from ltbench.sweep_args import data_root_of
            args.data_root = data_root_of(args.data_root)
            return _optional("ltbench.bench").run(args)
    # Expected failures (bad input, a file that is missing, unreadable or damaged) end here in
    # one line; anything else is a bug in ltbench and keeps its traceback.
    except UserError as exc:
        return fail(exc.args[0], exc.hint)
    except CorruptFile as exc:
        return fail(str(exc), "the file is damaged, or was not written by ltbench: move it aside (keep it to look "
                    "at) and run the command again")
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error, tomllib.TOMLDecodeError) as exc:
        return fail(f"a file could not be read as text of its kind: {exc}",
                    "the path names the wrong file, or the file is damaged")
    except OverflowError as exc:
        return fail(f"a number is out of range: {exc}", "give a smaller value")
    except OSError as exc:
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        return fail(f"{exc.strerror or exc}{': ' + where if where else ''}",
                    "check that the path exists and that you may read (or write) it")
    except KeyboardInterrupt:
        print("\nltbench: interrupted; finished runs and the last epoch checkpoints are kept. "
              "Run the same command again to resume.", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
