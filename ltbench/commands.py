"""What `ltbench list`, `ltbench run` and `ltbench status` do, given parsed arguments."""

import json
import os
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ltbench import distributed, environment, registry, run_lock, settings
from ltbench.data.image_datasets import OPTIONS_ENV, check_dataset_options
from ltbench.errors import CorruptFile, UserError, unknown_name
from ltbench.migrate import migrate_store, pending_migrations
from ltbench.models import CIFAR_BACKBONES
from ltbench.presets import PRESETS
from ltbench.progress import console, reporter_for_output, results_table
from ltbench.data.profiles import class_counts
from ltbench.store import SET_ASIDE, RunStore
from ltbench.settings import SPEC_FIELDS, as_settings
from ltbench.sweep import Sweep, expand, read_config
from ltbench.tag import check_tag, set_experiment_tag

# Options of the sweep itself (not of its runs: those are ltbench.settings)
DEFAULTS = {"preset": "paper", "seeds": ["0"], "results_dir": "results", "device": "auto"}


def list_everything() -> int:
    methods = Table(title="Methods")
    for col in ("name", "shown as", "description"):
        methods.add_column(col)
    for name, cls in registry.methods().items():
        methods.add_row(name, cls.title(), cls.summary)
    datasets = Table(title="Datasets")
    for col in ("name", "shown as", "many/medium/few rule", "description"):
        datasets.add_column(col)
    for name, info in registry.datasets().items():
        datasets.add_row(name, info.title, info.shot_rule, info.summary)
    _wide().print(methods, datasets)
    console.print(f"Backbones: {', '.join(CIFAR_BACKBONES)}, and any timm model by name")
    console.print(f"Presets: {', '.join(PRESETS)}")
    console.print("Settings: `ltbench list --settings`")
    return 0


def list_settings() -> int:
    table = Table(title="Settings (--set KEY=VALUE; a method's own: --set METHOD.KEY=VALUE)")
    for col in ("setting", "kind", "type", "default", "allowed", "help"):
        table.add_column(col, overflow="fold", no_wrap=col in ("setting", "kind"))
    schemas = {name: as_settings(cls.hyperparameters) for name, cls in registry.methods().items()}
    for row in settings.listing(schemas):
        # text, not markup: a help line may hold brackets, as in pip install 'ltbench[tensorboard]'
        table.add_row(*map(escape, (row.name, row.kind, row.type, row.default, row.allowed, row.help)))
    _wide().print(table)
    console.print("protocol: defines the experiment, part of the run id; execution: how it runs, recorded in the "
                  "result row, never part of the run id. Some defaults depend on the dataset (a method's paper "
                  "values): `ltbench run ... --dry-run --show-spec` shows what a run resolves to.")
    return 0


def show_method(name: str) -> int:
    """`ltbench list METHOD`: the method's protocol card (ltbench.card)."""
    from ltbench.card import protocol_card

    cls = registry.method(name)
    rows = protocol_card(name)
    datasets = list(rows[0].values)
    titles = {d: registry.dataset(d).title for d in datasets}
    table = Table(title=f"{cls.title()}: {cls.summary}")
    for col in ("setting", "kind", *titles.values(), "source"):
        table.add_column(col, overflow="fold", no_wrap=col in ("setting", "kind"))
    for row in rows:
        label = row.name if row.owner == "trainer" else f"{row.owner}.{row.name}"
        table.add_row(label, row.kind, *(row.values[d] for d in datasets), row.source_text(titles))
    _wide().print(table)
    if cls.stage1 is not None:
        console.print(f"Two stages: the trainer settings are stage 1's (a {cls.stage1.name} run of the same spec); "
                      f"stage 2 is {name}'s own settings.")
    console.print("The paper preset's values; --set KEY=VALUE or METHOD.KEY=VALUE changes one (the run is then "
                  "labelled custom).")
    return 0


def _wide() -> Console:
    """A log or a pipe has no edge to fit a table to: keep each entry on one line there."""
    return console if console.is_terminal else Console(width=200)


def fetch_data(name: str, data_root, allow_apt: bool) -> int:
    from ltbench.data.sources import data_root as resolve_root

    fetchable = [n for n, info in registry.datasets().items() if info.fetch is not None]
    if name not in fetchable:
        raise unknown_name("dataset that fetch-data can fetch", name, fetchable)
    registry.dataset(name).fetch(resolve_root(data_root), allow_apt=allow_apt)
    return 0


def sweep_from_args(args) -> tuple[Sweep, dict]:
    """Merge the config file (if any) under the command-line flags."""
    config = read_config(args.config) if args.config is not None else {}

    def pick(flag, *config_keys):
        value = getattr(args, flag, None)
        if value not in (None, []):
            return value
        for key in config_keys:
            if key in config:
                return config[key] if isinstance(config[key], list) or key not in ("datasets", "dataset") else [config[key]]
        return DEFAULTS.get(flag)

    methods = pick("methods", "methods")
    datasets = pick("datasets", "datasets", "dataset")
    factors = pick("imbalance_factors", "imbalance_factors", "if")
    # datasets published with their split have their own imbalance factor
    fixed_only = bool(datasets) and all(registry.dataset(d).fixed_imbalance_factor is not None for d in datasets)
    missing = [flag for flag, value in (("--methods", methods), ("--dataset", datasets), ("--if", factors or fixed_only))
               if not value]
    if missing:
        raise UserError(f"{', '.join(missing)} not given", hint="e.g. ltbench run --methods ce,focal "
                        "--dataset fashion_mnist_lt --if 10,100 (or put them in a --config file)")
    overrides = dict(config.get("set", {}))
    for key in SPEC_FIELDS:
        value = getattr(args, key, None)
        if value is None:
            value = config.get(key)
        if value is not None:
            overrides[key] = value
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set '{item}' is not KEY=VALUE", hint="e.g. --set lr=0.05 or --set focal.gamma=2")
        overrides[key.strip()] = value.strip()
    seeds = [parse_seed(s) for s in pick("seeds", "seeds")]
    sweep = Sweep(methods=list(methods), datasets=list(datasets), imbalance_factors=list(factors or []), seeds=seeds,
                  preset=pick("preset", "preset"), overrides=overrides)
    where = {key: pick(key, key) for key in ("results_dir", "device", "jobs", "devices")}
    if not isinstance(where["results_dir"], str) or not where["results_dir"].strip():
        raise UserError(f"the results dir is {where['results_dir']!r}, not a folder name",
                        hint="pass --results-dir DIR (default: results)")
    check_device_name(where["device"])
    where["data_root"] = getattr(args, "data_root", None) or config.get("data_root")
    where["data_options"] = data_options_from(config.get("data", {}), getattr(args, "data_options", []) or [])
    tag = pick("tag", "tag")
    where["tag"] = None if tag is None else check_tag(tag)
    return sweep, where


# numpy's seeds (np.random.RandomState, SeedSequence) are 0 .. 2**32 - 1; torch takes them too
SEED_LIMIT = 2**32


def parse_seed(value) -> int:
    """A seed as typed or as a config file gives it: a whole number in numpy's seed range."""
    if isinstance(value, bool):
        seed = None
    elif isinstance(value, int):
        seed = value
    elif isinstance(value, float):
        seed = int(value) if value.is_integer() else None
    else:
        text = str(value).strip()
        seed = int(text) if text.isdigit() else None
    if seed is None:
        raise UserError(f"seed '{value}' is not an integer", hint="e.g. --seeds 0,1,2")
    if not 0 <= seed < SEED_LIMIT:
        raise UserError(f"seed {value} is out of range: seeds are 0 to {SEED_LIMIT - 1} (numpy's seed range)",
                        hint="e.g. --seeds 0,1,2")
    return seed


def check_device_name(device) -> None:
    if device in ("auto", "cpu", "cuda") or (isinstance(device, str) and device.startswith("cuda:")
                                               and device[5:].isdigit()):
        return
    raise UserError(f"unknown device {device!r}", hint="use auto, cpu, cuda or cuda:N")


def check_device_present(device: str) -> None:
    """A local sweep on a device this machine lacks fails here, not run by run."""
    import torch

    environment.resolve_device(device)
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)",
                        hint="use cuda (the first), cuda:0 .. cuda:N-1, or auto")


def slurm_flags_given(args) -> list[str]:
    """The Slurm options on the command line, which only --launcher slurm reads."""
    given = [f"--{name.replace('_', '-')}" for name, value in sorted(vars(args).items())
             if name.startswith("slurm_") and value not in (None, [], False)]
    return given + (["--wait"] if getattr(args, "wait", False) else [])


def check_grid(specs) -> None:
    """What can be known before anything trains: every constructed dataset keeps an image in
    each class at the sweep's imbalance factors (--if 1e9 leaves the tail none)."""
    for dataset, factor, profile, n_max in sorted({(s.dataset, s.imbalance_factor, s.profile, s.n_max or 0)
                                                   for s in specs}):
        info = registry.dataset(dataset)
        if info.fixed_imbalance_factor is None:
            class_counts(info.num_classes, n_max or info.n_max, factor, profile)


def data_options_from(table: dict, flags: list[str]) -> dict:
    """{dataset: {key: value}}: the config's [data.<name>] tables, then --data-option flags."""
    options = {name: dict(values) if isinstance(values, dict) else values for name, values in table.items()}
    for item in flags:
        key, sep, value = item.partition("=")
        name, dot, option = key.strip().partition(".")
        if not sep or not dot or not option:
            raise UserError(f"--data-option '{item}' is not DATASET.KEY=VALUE",
                            hint="e.g. --data-option imagenet_lt.image_root=/datasets/imagenet")
        options.setdefault(name, {})[option] = value.strip()
    check_dataset_options(options)
    return options


def local_plan(jobs, devices: list[str] | None, device: str):
    """--jobs and --devices (or the config's jobs and devices) for a local sweep; under
    torchrun each run already spans every process, so one run at a time."""
    from ltbench.launch.job_plan import parse_jobs, plan_jobs

    if distributed.requested_world_size() > 1:
        if devices or (jobs is not None and parse_jobs(jobs) > 1):
            raise UserError("--jobs and --devices do not go with torchrun: there each run is data-parallel over "
                            "every process, and torchrun gives each process its GPU",
                            hint="leave them out under torchrun, or run without torchrun to train several runs at once")
        jobs = 1
    return plan_jobs(jobs, devices, device)


def run(args) -> int:
    if args.launcher != "slurm" and slurm_flags_given(args):
        raise UserError(f"{', '.join(slurm_flags_given(args))}: Slurm option(s), read only with --launcher slurm",
                        hint="add --launcher slurm, or leave the Slurm options out")
    if args.launcher == "slurm":
        from ltbench.launch.slurm_options import options_from_args
        options_from_args(args)  # its config file and values, checked before anything is written
    sweep, where = sweep_from_args(args)
    if args.launcher == "local":
        check_device_present(where["device"])
        where["plan"] = local_plan(where["jobs"], where["devices"], where["device"])
    elif getattr(args, "jobs", None) is not None or getattr(args, "devices", None):
        # a config file's jobs and devices are for its local runs: under Slurm they are unused
        raise UserError("--jobs and --devices are options of the local launcher",
                        hint="under Slurm every run is a job of its own: leave them out "
                        "(--slurm-array-parallelism caps how many run at once)")
    if where["data_root"]:
        # through the environment, so Slurm jobs and subprocesses see the same root
        os.environ["LTBENCH_DATA"] = str(Path(where["data_root"]).expanduser().resolve())
    if where["data_options"]:
        os.environ[OPTIONS_ENV] = json.dumps(where["data_options"])
    set_experiment_tag(where["tag"])  # through the environment too, for Slurm jobs and torchrun ranks
    if distributed.requested_world_size() > 1 and args.launcher != "local":
        raise UserError("under torchrun, ltbench runs the sweep itself: use --launcher local",
                        hint="for Slurm, leave torchrun out and ask for --slurm-gpus / --slurm-tasks-per-node")
    # under torchrun: every process runs the sweep, each run data-parallel over all of them
    with distributed.process_group(where["device"]):
        if not distributed.is_main():
            console.quiet = True  # one account of the sweep, rank 0's
        return _run(args, sweep, where)


def _run(args, sweep: Sweep, where: dict) -> int:
    specs = expand(sweep)
    check_grid(specs)
    if args.show_spec and not args.dry_run:
        raise UserError("--show-spec goes with --dry-run", hint="ltbench run ... --dry-run --show-spec")
    store = RunStore(where["results_dir"])
    # results of an earlier ltbench: migrated before a real run; a dry run writes nothing and
    # looks them up where they are
    earlier = pending_migrations(store.root) if args.dry_run else {}
    if distributed.is_main() and not args.dry_run:
        migrate_store(store.root, log=console.print)
    states = distributed.broadcast({spec.run_id: store.state(earlier.get(spec.run_id, spec.run_id))
                                    for spec in specs})
    if args.dry_run:
        if args.show_spec:
            for spec in specs:
                print(json.dumps({"run_id": spec.run_id, **spec.to_dict()}, sort_keys=False))
            return 0
        # what a run would stop on, found without reading or fetching anything
        absent = {name: error for name in dict.fromkeys(s.dataset for s in specs)
                  if (error := registry.dataset(name).missing(where["data_root"])) is not None}
        console.print(grid_table(specs, states, absent))
        blocked = sorted({s.dataset for s in specs if s.dataset in absent and states[s.run_id] != "done"})
        if blocked:
            raise absent[blocked[0]]
        return 0
    todo = [spec for spec in specs if states[spec.run_id] != "done"]
    console.print(f"{len(specs)} runs in the grid, {len(specs) - len(todo)} already done, {len(todo)} to run")
    _check_datasets_present(todo, where["data_root"])
    store.ensure_writable()
    if args.launcher == "slurm":
        from ltbench.launch import slurm
        return slurm.launch(todo, where["results_dir"], args, device=where["device"])
    plan = where["plan"]

    def log(line) -> None:
        console.print(escape(str(line)))  # "[run id] ..." is text, not rich markup

    if plan.jobs > 1:
        from ltbench.launch.jobs import run_jobs
        from ltbench.launch.job_view import LiveView, PassThrough
        view = LiveView(console, where["results_dir"], len(todo)) if console.is_terminal else PassThrough()
        statuses = run_jobs(todo, where["results_dir"], plan, log=log, view=view)
    else:
        from ltbench.launch.local import run_local
        device = plan.devices[0] if where["devices"] else where["device"]
        statuses = run_local(todo, where["results_dir"], device,
                             reporter_factory=reporter_for_output if distributed.is_main() else None, log=log)
    rows = [store.read_result(spec.run_id) for spec in specs]
    console.print(results_table([r for r in rows if r is not None]))
    failed = [rid for rid, s in statuses.items() if s == "failed"]
    if failed:
        console.print(f"[red]{len(failed)} run(s) failed[/red]; see `ltbench status --results-dir {where['results_dir']}`")
    if len(failed) < len(statuses):
        console.print(escape(f"next: ltbench report --results-dir {where['results_dir']}"))
    return 1 if failed else 0


def _check_datasets_present(specs, data_root) -> None:
    """Fail before training anything when a dataset is missing, not once per run."""
    from ltbench.data.sources import data_root as resolve_root

    for name in sorted({spec.dataset for spec in specs}):
        registry.dataset(name).load(resolve_root(data_root))


def grid_table(specs, states, absent: dict | None = None) -> Table:
    """The grid and what `ltbench run` would do with each run; `absent`: datasets whose files
    are not there (a run on one would stop)."""
    table = Table(title=f"{len(specs)} runs")
    for col in ("run id", "method", "dataset", "IF", "seed", "preset", "backbone", "epochs", "batch", "state"):
        table.add_column(col)
    action = {"done": "done (skip)", "partial": "partial (resume)", "failed": "failed (retry)",
              "corrupt": f"corrupt (set aside under {SET_ASIDE}/, rerun)", "missing": "to run"}
    for s in specs:
        state = action[states[s.run_id]]
        if s.dataset in (absent or {}) and states[s.run_id] != "done":
            state = "dataset missing"
        table.add_row(s.run_id, s.method, s.dataset, f"{s.imbalance_factor:g}", str(s.seed), s.preset, s.backbone,
                      str(s.epochs), str(s.batch_size), state)
    return table


def partial_progress(store: RunStore, run_id: str, epochs: str) -> str:
    """How far a partial run got, from its history: its last finished epoch, and its last
    evaluated top-1 when there is one."""
    history = store.read_history(run_id)
    if not history:
        return "started, no epoch finished"
    last = history[-1]
    evaluated = [row for row in history if row.get("top1")]
    top1 = f", top-1 {float(evaluated[-1]['top1']):.2f}% at epoch {evaluated[-1]['epoch']}" if evaluated else ""
    return f"epoch {last['epoch']} of {epochs}{top1}"


def status(results_dir) -> int:
    store = RunStore(results_dir)
    store.ensure_readable()
    migrate_store(store.root, log=console.print)
    run_ids = store.run_ids()
    if not run_ids:
        console.print(f"no runs in {results_dir}")
        return 0
    scheduler, job_logs = {}, {}
    try:
        from ltbench.launch import slurm
        scheduler, job_logs = slurm.scheduler_states(results_dir), slurm.job_logs(results_dir)
    except ImportError:
        pass
    table = Table(title=escape(f"Runs in {results_dir}"))
    for col in ("run id", "method", "dataset", "IF", "seed", "preset", "epochs", "state", "top-1 %", "detail"):
        table.add_column(col, overflow="fold")  # a long name is wrapped, never cut to an ellipsis
    counts, lines = {}, []
    for run_id in run_ids:
        (state, why), top1, detail = store.inspect(run_id), "", ""
        try:
            spec = store.read_spec(run_id)
            key = (spec.method, spec.dataset, spec.imbalance_factor, spec.seed)
            label = (spec.method, spec.dataset, f"{spec.imbalance_factor:g}", str(spec.seed), spec.preset,
                     str(spec.epochs))
        except CorruptFile as exc:
            key, label, state, why = ("~",), ("?",) * 6, "corrupt", str(exc)
        if state in ("done", "failed"):
            row = store.read_result(run_id)
            top1 = row["top1"]
            if state == "failed":
                job_log = f"; job log: {job_logs[run_id]}" if run_id in job_logs else ""
                detail = f"{row['error']} (log: {store.run_dir(run_id) / 'error.log'}{job_log})"
        elif state == "corrupt":
            detail = f"{why}; a rerun of the sweep moves the folder to {store.root / SET_ASIDE}/ and redoes the run"
        elif state == "partial":
            detail = partial_progress(store, run_id, label[-1])
            holder = run_lock.holder_pid(store.run_dir(run_id))
            detail += f"; training now (pid {holder})" if holder is not None else ""
        # scheduler_states leaves out runs whose current result is in the store, so it wins:
        # a retried failure keeps its old row until the new job starts
        if run_id in scheduler:
            state = scheduler[run_id]
            if state == "lost":
                state, detail = "failed", ("its Slurm job ended without a result (killed, cancelled, "
                                           f"out of memory?); log: {job_logs.get(run_id, '?')}")
        counts[state] = counts.get(state, 0) + 1
        lines.append((key, run_id, (run_id, *label, state, top1, detail)))
    # by what a run is, not by its hash: a method's seeds side by side
    for _, _, cells in sorted(lines, key=lambda line: (line[0], line[1])):
        table.add_row(*(escape(cell) for cell in cells))  # a crafted file's text is shown, never read as markup
    _wide().print(table)
    console.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return 0
