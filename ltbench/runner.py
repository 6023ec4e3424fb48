"""One run from spec to stored result: data, model, method, trainer, store.

`execute` is the payload every launcher calls (the local loop, Slurm jobs, torchrun
processes); nothing here knows which one called it.
"""

import json
import traceback

import torch

import ltbench
from ltbench import distributed, environment, registry, run_lock, stages, teacher
from ltbench.shared_store import open_store
from ltbench.metrics import group_accuracy, group_sizes
from ltbench.run_context import RunContext
from ltbench.spec import RunSpec
from ltbench.checkpoints import CheckpointRefused
from ltbench.errors import CorruptFile
from ltbench.flops import run_forward_flops
from ltbench.store import RunStore
from ltbench.progress import Reporters, TensorBoardReporter
from ltbench.train import Reporter, Trainer

SPEC_COLUMNS = ("method", "dataset", "imbalance_factor", "profile", "backbone", "seed", "epochs", "batch_size", "preset")


def execute(spec: RunSpec, results_dir, device: str = "auto", reporter: Reporter | None = None,
            context: RunContext | None = None, log=print, wait: bool = False) -> str:
    """Train (or resume) one run and store its result, holding the run's lock (ltbench.run_lock)
    while it does. Returns "done", "failed", or "busy": another process holds the lock, so is
    training the run (with `wait`, this waits for it instead). A run found done, by another
    process meanwhile, is "done" and not trained again. A failure is recorded in the result
    row with its reason rather than raised, so a sweep goes on.
    Ctrl-C is not a failure: it propagates, and the last epoch checkpoint stays valid.
    In a distributed run every rank calls this; a failure is recorded and then raised, since
    the other ranks wait on the failed one and only the launcher can end them.
    `context`: where the data is and the run's tag (default: the default data root, no tag)."""
    context = context or RunContext()
    store = open_store(results_dir)
    waiting = f"[{spec.run_id}] {spec.label}: another process is training it; waiting for it"
    with run_lock.holding(store.run_dir(spec.run_id), wait, on_wait=lambda: log(waiting)) as held:
        if not held:
            return "busy"
        found, why = store.inspect(spec.run_id)
        if found == "done":
            log(f"[{spec.run_id}] {spec.label}: done meanwhile, by another process")
            return "done"
        if found != "corrupt":
            return _train(spec, store, results_dir, device, reporter, context, log)
        # its files name another run or cannot be read: nothing in the folder is trusted, and
        # nothing is deleted either. The lock file moves away with the folder, so the run is
        # trained under a lock in the new folder.
        log(f"[{spec.run_id}] {why}; the folder moved to {store.set_aside(spec.run_id)}, the run starts over")
    return execute(spec, results_dir, device, reporter, context, log, wait)


def _train(spec: RunSpec, store, results_dir, device: str, reporter, context: RunContext, log) -> str:
    """execute's work, with the run's lock held."""
    store.write_spec(spec)
    # a retry starts from the last good checkpoint; the old failure row must not outlive it
    (store.run_dir(spec.run_id) / "result.csv").unlink(missing_ok=True)
    started = environment.now()
    torch_device = None
    try:
        torch_device = environment.resolve_device(device)
        stage1 = ensure_stage1(spec, results_dir, device, reporter, context, log)
        distils_from = ensure_teacher(spec, results_dir, device, reporter, context, log)
        memory = environment.PeakMemory(torch_device)  # this run's own, after its stage 1's or teacher's
        trainer = build_trainer(spec, torch_device, store, reporter, context, stage1, distils_from)
        try:
            resumed = load_checkpoint_into(trainer, store, spec.run_id)
        except CorruptFile as exc:
            log(f"[{spec.run_id}] {exc}; starting the run over")
            resumed = False
        if resumed:
            log(f"[{spec.run_id}] resuming from epoch {trainer.start_epoch} of {trainer.epochs}")
        else:
            log(f"[{spec.run_id}] {spec.label}: training from epoch 1 of {trainer.epochs}")
        # counted before training, so that a model the counter cannot run fails the run at once
        flops = run_forward_flops(trainer)
        outcome = trainer.fit()
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        try:
            store.write_text(spec.run_id, distributed.rank_file("error.log"), traceback.format_exc())
            store.write_result(result_row(spec, status="failed", error=detail, started=started, device=torch_device,
                                          tag=context.tag))
        except OSError:
            # the folder takes no writes (a full disk, a read-only folder): the error that ended
            # the run says why, not the error log's own
            raise exc from None
        if distributed.is_distributed():
            raise
        return "failed"
    counts, data = outcome.final, trainer.data
    if outcome.predictions is not None:
        store.write_predictions(spec.run_id, outcome.predictions)
    names = getattr(data, "class_names", None) or [""] * data.num_classes  # a plugin's data may name none
    per_class = [
        {"class": c, "name": names[c], "n_train": n, "correct": int(counts.correct[c]), "total": int(counts.total[c])}
        for c, n in enumerate(data.class_counts)
    ]
    # the result row's many/medium/few follow the dataset's rule; the report can regroup the
    # per-class counts under any other
    convention = registry.dataset(spec.dataset).shot_rule
    groups = group_accuracy(counts, data.class_counts, convention)
    sizes = group_sizes(data.class_counts, convention)
    seconds, images = outcome.train_seconds, outcome.images_seen
    peak_mb = memory.mb()
    staged = {}
    if stage1 is not None:  # the run's cost is both stages', a reused stage 1 at its recorded cost
        seconds, images = seconds + stage1.state["seconds"], images + stage1.state["images"]
        if peak_mb is not None and stage1.result.get("peak_mem_mb"):
            peak_mb = max(peak_mb, float(stage1.result["peak_mem_mb"]))
        staged = dict(stage1_run_id=stage1.spec.run_id, stage1_reused=stage1.reused,
                      stage1_wall_s=round(stage1.state["seconds"], 2))
    if distils_from is not None:
        # the teacher is a run of its own, shared by its students: its time is recorded beside
        # this run's, not added to it (the report's cost table counts it once, as its own row)
        staged.update(teacher_run_id=distils_from.spec.run_id, teacher_reused=distils_from.reused,
                      teacher_wall_s=round(distils_from.state["seconds"], 2))
    row = result_row(
        spec, status="done", started=started, device=torch_device, tag=context.tag,
        top1=round(counts.top1, 4), top1_best=round(outcome.best_top1, 4), top1_best_epoch=outcome.best_epoch + 1,
        **validation_columns(outcome, data, convention),
        **{g: (None if acc is None else round(acc, 4)) for g, acc in groups.items()},
        **{f"n_{g}": n for g, n in sizes.items()},
        n_train=len(data.train_y), n_classes=data.num_classes, wall_s=round(seconds, 2),
        images_per_s=round(images / max(seconds, 1e-9), 1), peak_mem_mb=None if peak_mb is None else round(peak_mb, 1), peak_mem_measure=memory.measure,
        split_fingerprint=data.split_fingerprint, forward_flops=flops,
        calibration=json.dumps(outcome.calibration, sort_keys=True) if outcome.calibration else "", **staged,
    )
    store.write_result(row, per_class)
    return "done"


def validation_columns(outcome, data, convention: str) -> dict:
    """The result row's validation columns: the final model's top-1 and many / medium / few
    on the validation split, its size, and the test top-1 at the epoch best on validation
    (top1_bestval, the model selection that never reads the test set). Empty where the data
    has no validation image."""
    if outcome.validation is None:
        return {"n_val": 0}
    groups = group_accuracy(outcome.validation, data.class_counts, convention)
    return {"val_top1": round(outcome.validation.top1, 4),
            **{f"val_{g}": (None if acc is None else round(acc, 4)) for g, acc in groups.items()},
            "n_val": int(outcome.validation.total.sum()),
            "top1_bestval": None if outcome.top1_bestval is None else round(outcome.top1_bestval, 4),
            "top1_bestval_epoch": outcome.bestval_epoch + 1}


def ensure_stage1(spec: RunSpec, results_dir, device: str, reporter=None, context: RunContext | None = None,
                  log=print) -> stages.Stage1 | None:
    """A two-stage run's stage 1, reused from the store or trained now as a run of its own."""
    first = stages.stage1_spec(spec)
    if first is None:
        return None
    return ensure_finished(first, "stage 1", results_dir, device, reporter, context, log)


def ensure_teacher(spec: RunSpec, results_dir, device: str, reporter=None, context: RunContext | None = None,
                   log=print) -> stages.FinishedRun | None:
    """The teacher run a distilling run reads (ltbench.teacher), reused from the store or trained now."""
    first = teacher.teacher_spec(spec)
    if first is None:
        return None
    teacher.check_recorded(spec, first)
    return ensure_finished(first, "teacher", results_dir, device, reporter, context, log)


def ensure_finished(first: RunSpec, role: str, results_dir, device: str, reporter=None,
                    context: RunContext | None = None, log=print) -> stages.FinishedRun:
    """The run `first` (a stage 1, a teacher: `role`), reused from the store or trained now as
    a run of its own, once: another process training it is waited for."""
    store = open_store(results_dir)

    def done() -> bool:
        return distributed.broadcast(store.state(first.run_id) == "done" and store.checkpoint_path(first.run_id).exists())

    reused = done()
    if not reused:
        # another process (a sweep beside this one, another job of --jobs, a Slurm job) may be
        # training it: wait for that, rather than train it a second time
        run_lock.wait_while_held(store.run_dir(first.run_id), on_wait=lambda: log(
            f"  {role}: {first.label} ({first.run_id}) is being trained by another process; waiting for it"))
        reused = done()
    if reused:
        log(f"  {role}: reusing {first.label} ({first.run_id})")
    else:
        log(f"  {role}: training {first.label} ({first.run_id}) as a run of its own")
        if execute(first, results_dir, device, reporter, context, log, wait=True) != "done":
            raise RuntimeError(f"{role} ({first.method} run {first.run_id}) failed: "
                               f"{store.read_result(first.run_id)['error']}")
    return stages.FinishedRun(first, reused, store.read_result(first.run_id), store.load_checkpoint(first.run_id))


def build_trainer(spec: RunSpec, device: torch.device, store: RunStore, reporter=None,
                  context: RunContext | None = None, stage1: stages.Stage1 | None = None,
                  distils_from: stages.FinishedRun | None = None) -> Trainer:
    context = context or RunContext()
    dataset = registry.dataset(spec.dataset).located(context.options_of(spec.dataset))
    data = dataset.build(context.data_root, spec.imbalance_factor, spec.profile, spec.n_max,
                         val_per_class=spec.params.get("val_per_class"))
    label = spec.label if stage1 is None else f"{spec.label} stage 2"
    for first in (stage1, distils_from):
        if first is not None and first.state is not None:
            check_same_data(store.checkpoint_path(first.spec.run_id), first.state, data)

    def save(state: dict) -> None:
        # the data's fingerprint travels with the weights: a resume on changed files is refused
        store.save_checkpoint(spec, {**state, "split_fingerprint": data.split_fingerprint})
        # written after the checkpoint: a kill between the two leaves history.csv one epoch
        # short, and the resumed run rewrites it whole from the checkpoint's rows
        store.write_history(spec.run_id, state["history"])

    reporter = reporter or Reporter()
    if spec.trainer_params.get("log_tensorboard") and distributed.is_main():
        reporter = Reporters(reporter, TensorBoardReporter(store.run_dir(spec.run_id) / "tensorboard"))
    return make_trainer(spec, data, device, stage1=stage1, distils_from=distils_from, reporter=reporter, label=label,
                        save_checkpoint=save, shot_rule=registry.dataset(spec.dataset).shot_rule)


def load_checkpoint_into(trainer: Trainer, store: RunStore, run_id: str) -> bool:
    """The run's checkpoint loaded into `trainer`, once it is known to be of the trainer's data;
    False where the run has none."""
    state = store.load_checkpoint(run_id)
    if state is None:
        return False
    check_same_data(store.checkpoint_path(run_id), state, trainer.data)
    trainer.load_state_dict(state)
    return True


def check_same_data(path, state: dict, data) -> None:
    """A checkpoint trained on other data (a dataset file replaced since) is not resumed from."""
    recorded = state.get("split_fingerprint")
    if recorded is not None and recorded != data.split_fingerprint:
        raise CheckpointRefused(f"checkpoint {path} was trained on other data than {data.name} now holds (split "
                                f"fingerprint {recorded}, now {data.split_fingerprint}): were the dataset's files "
                                "changed? It was not used. Move the run folder away to train it on today's files")


def make_trainer(spec: RunSpec, data, device: torch.device, params: dict | None = None,
                 stage1: stages.Stage1 | None = None, distils_from: stages.FinishedRun | None = None,
                 **trainer_options) -> Trainer:
    """The spec's backbone and method on `data`; `params` replaces the spec's trainer settings
    (benchmarks switch execution settings this way). With `stage1`, the trainer of a two-stage
    method's stage 2; with `distils_from`, the teacher run a distilling method reads, frozen."""
    params = spec.trainer_params if params is None else params
    # Model initialisation draws from the global RNG: seed it so a run is a function of its spec.
    torch.manual_seed(spec.seed)
    method_cls = registry.method(spec.method)
    backbone = method_cls.create_backbone(spec.backbone, data.in_chans, spec.hyperparameters)
    method = method_cls(spec.own_hyperparameters, data.class_counts, backbone.num_features)
    schedule = {"params": params, "epochs": spec.epochs, "batch_size": spec.batch_size}
    if stage1 is not None:
        backbone, schedule = stages.stage2_setup(backbone, method, stage1, params, data.class_counts)
    if distils_from is not None:
        method.load_teacher(teacher.load_teacher(distils_from.spec, distils_from.state, data, device,
                                                 channels_last=params.get("channels_last", False)))
    if params.get("compile"):
        backbone = torch.compile(backbone, mode="default" if params["compile"] is True else params["compile"])
    return Trainer(data=data, backbone=backbone, method=method, **schedule, seed=spec.seed, device=device,
                   **trainer_options)


def result_row(spec: RunSpec, status: str, started: str, device=None, error: str = "", tag: str = "",
               **values) -> dict:
    return {
        "run_id": spec.run_id,
        **{k: getattr(spec, k) for k in SPEC_COLUMNS},
        "params": json.dumps(spec.flat_params(), sort_keys=True),
        "execution": json.dumps(spec.execution, sort_keys=True),
        "threads": torch.get_num_threads(),
        "mmf_convention": registry.dataset(spec.dataset).shot_rule,
        "method_title": registry.method(spec.method).title(),
        "device": environment.device_label(device) if device is not None else "",
        "torch": torch.__version__,
        "ltbench_version": ltbench.__version__,
        "git_sha": environment.git_sha(),
        "started_at": started,
        "finished_at": environment.now(),
        "status": status,
        "error": error,
        "slurm_job_id": environment.slurm_job_id(),
        "tag": tag,
        **values,
    }
