"""What `ltbench list` and `ltbench run` do, given parsed arguments (`ltbench status`: ltbench.status)."""

import json

from rich.markup import escape
from rich.table import Table

from ltbench import distributed, environment, registry, settings
from ltbench.errors import UserError, unknown_name
from ltbench.migrate import migrate_store, pending_migrations
from ltbench.models import CIFAR_BACKBONES
from ltbench.presets import PRESETS
from ltbench.display import wide as _wide
from ltbench.progress import console, reporter_for_output, results_table
from ltbench.data.profiles import class_counts
from ltbench.store import SET_ASIDE, RunStore
from ltbench.settings import as_settings
from ltbench.run_context import RunContext
from ltbench.sweep import Sweep, expand
from ltbench.sweep_args import data_root_of, sweep_from_args


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


def show_method(name: str, preset: str = "paper") -> int:
    """`ltbench list METHOD [--preset P]`: the method's protocol card (ltbench.card)."""
    from ltbench.card import card_notes, protocol_card, search_card

    cls = registry.method(name)
    rows = protocol_card(name, preset=preset)
    datasets = list(rows[0].values)
    titles = {d: registry.dataset(d).title for d in datasets}
    _wide().print(_card_table(f"{cls.title()}: {cls.summary}", "kind", rows, titles))
    _wide().print(_card_table("Search space: the range an equal-budget search draws each setting from",
                              "scale", search_card(name, datasets, preset), titles))
    if cls.stage1 is not None:
        console.print(f"Two stages: the trainer settings are stage 1's (a {cls.stage1.name} run of the same spec); "
                      f"stage 2 is {name}'s own settings.")
    if cls.teacher is not None:
        console.print(f"Distils from a frozen teacher: a {cls.teacher.method} run of the same spec (ltbench.teacher), "
                      "trained first where the results dir lacks it; its run id is the student's teacher_run_id.")
    console.print(f"The {preset} preset's values; --set KEY=VALUE or METHOD.KEY=VALUE changes one (the run is then "
                  "labelled custom).")
    for note in card_notes(name, datasets, preset):
        console.print(f"Not a paper protocol on {note}", markup=False)
    return 0


def _card_table(title: str, second: str, rows, titles: dict) -> Table:
    table = Table(title=title)
    for col in ("setting", second, *titles.values(), "source"):
        table.add_column(col, overflow="fold", no_wrap=col in ("setting", second))
    for row in rows:
        label = row.name if row.owner == "trainer" else f"{row.owner}.{row.name}"
        table.add_row(label, row.kind, *(row.values[d] for d in titles), row.source_text(titles))
    return table


def fetch_data(name: str, data_root, allow_apt: bool) -> int:
    fetchable = [n for n, info in registry.datasets().items() if info.fetch is not None]
    if name not in fetchable:
        raise unknown_name("dataset that fetch-data can fetch", name, fetchable)
    registry.dataset(name).fetch(data_root_of(data_root), allow_apt=allow_apt)
    return 0


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


def check_launcher_flags(args) -> None:
    """Slurm options only with --launcher slurm, checked (with their config file) before
    anything is written."""
    if args.launcher != "slurm" and slurm_flags_given(args):
        raise UserError(f"{', '.join(slurm_flags_given(args))}: Slurm option(s), read only with --launcher slurm",
                        hint="add --launcher slurm, or leave the Slurm options out")
    if args.launcher == "slurm":
        from ltbench.launch.slurm_options import options_from_args
        options_from_args(args)


def refuse_local_options(jobs, devices, what: str) -> None:
    """--jobs and --devices under Slurm, where every `what` is a job of its own."""
    if jobs is not None or devices:
        raise UserError("--jobs and --devices are options of the local launcher",
                        hint=f"under Slurm every {what} is a job of its own: leave them out "
                        "(--slurm-array-parallelism caps how many run at once)")


def evaluate(args) -> int:
    """`ltbench evaluate` (ltbench.evaluate), launched as `ltbench run` launches runs."""
    from ltbench.evaluate import evaluate_runs
    from ltbench.sweep_args import data_options_from, data_root_of

    check_launcher_flags(args)
    if args.launcher == "slurm":
        refuse_local_options(args.jobs, args.devices, "evaluation")
    plan, device = None, args.device
    if args.launcher == "local":
        check_device_present(device)
        plan = local_plan(args.jobs, args.devices, device)
        device = plan.devices[0] if args.devices else device
    context = RunContext(data_root_of(args.data_root), data_options_from({}, args.data_options))
    return evaluate_runs(args.results_dir, device, context, log=lambda line: print(line, flush=True), plan=plan,
                         slurm_args=args if args.launcher == "slurm" else None)


def run(args) -> int:
    sweep, where = sweep_and_launcher(args)
    if distributed.requested_world_size() > 1 and args.launcher != "local":
        raise UserError("under torchrun, ltbench runs the sweep itself: use --launcher local",
                        hint="for Slurm, leave torchrun out and ask for --slurm-gpus / --slurm-tasks-per-node")
    # under torchrun: every process runs the sweep, each run data-parallel over all of them
    with distributed.process_group(where["device"]):
        if not distributed.is_main():
            console.quiet = True  # one account of the sweep, rank 0's
        return _run(args, sweep, where)


def sweep_and_launcher(args) -> tuple[Sweep, dict]:
    """The sweep of `ltbench run` or `ltbench tune` (ltbench.sweep_args) and where its runs
    train: `where["plan"]` for the local launcher; the Slurm options checked before anything
    is written."""
    check_launcher_flags(args)
    sweep, where = sweep_from_args(args)
    if args.launcher == "local":
        check_device_present(where["device"])
        where["plan"] = local_plan(where["jobs"], where["devices"], where["device"])
    else:
        # a config file's jobs and devices are for its local runs: under Slurm they are unused
        refuse_local_options(getattr(args, "jobs", None), getattr(args, "devices", None), "run")
    return sweep, where


def train_here(todo, where: dict, context: RunContext | None = None) -> dict:
    """`todo` trained on this machine as `where["plan"]` says (one at a time in this process,
    or --jobs processes at once); run id -> done | failed."""
    plan, context = where["plan"], context or where["context"]

    def log(line) -> None:
        console.print(escape(str(line)))  # "[run id] ..." is text, not rich markup

    if plan.jobs > 1:
        from ltbench.launch.jobs import run_jobs
        from ltbench.launch.job_view import LiveView, PassThrough
        view = LiveView(console, where["results_dir"], len(todo)) if console.is_terminal else PassThrough()
        return run_jobs(todo, where["results_dir"], plan, log=log, view=view, context=context)
    from ltbench.launch.local import run_local
    device = plan.devices[0] if where["devices"] else where["device"]
    return run_local(todo, where["results_dir"], device,
                     reporter_factory=reporter_for_output if distributed.is_main() else None, log=log,
                     context=context)


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
    todo = [spec for spec in specs if states[spec.run_id] != "done"]
    if args.show_spec:
        for spec in specs:
            print(json.dumps({"run_id": spec.run_id, **spec.to_dict()}, sort_keys=False))
        return 0
    # a dataset the runs cannot read stops the sweep here, not once per run; the dry run finds
    # it the same way, so it never promises a run the run then refuses
    unreadable = unreadable_datasets(todo, where["context"])
    if args.dry_run:
        console.print(grid_table(specs, states, unreadable))
    else:
        console.print(f"{len(specs)} runs in the grid, {len(specs) - len(todo)} already done, {len(todo)} to run")
    if unreadable:
        raise next(iter(unreadable.values()))
    if args.dry_run:
        return 0
    store.ensure_writable()
    if args.launcher == "slurm":
        from ltbench.launch import slurm
        return slurm.launch(todo, where["results_dir"], args, device=where["device"], context=where["context"])
    statuses = train_here(todo, where)
    rows = [store.read_result(spec.run_id) for spec in specs]
    console.print(results_table([r for r in rows if r is not None]))
    failed = [rid for rid, s in statuses.items() if s == "failed"]
    if failed:
        console.print(f"[red]{len(failed)} run(s) failed[/red]; see `ltbench status --results-dir {where['results_dir']}`")
    if len(failed) < len(statuses):
        console.print(escape(f"next: ltbench report --results-dir {where['results_dir']}"))
    return 1 if failed else 0


def unreadable_datasets(specs, context: RunContext) -> dict[str, UserError]:
    """{dataset: why a run could not read it} for the datasets of `specs`, read where `context`
    says as a run reads them: what `ltbench run` stops on before training, and what its dry
    run says it would stop on."""
    errors = {}
    for name in dict.fromkeys(spec.dataset for spec in specs):
        error = registry.dataset(name).located(context.options_of(name)).missing(context.data_root)
        if error is not None:
            errors[name] = error
    return errors


def grid_table(specs, states, absent: dict | None = None) -> Table:
    """The grid and what `ltbench run` would do with each run; `absent`: datasets a run could
    not read (a run on one would stop)."""
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
