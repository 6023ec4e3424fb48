"""Running specs in this process: `execute` is the payload every launcher calls."""

import json
import traceback

import torch

import ltbench
from ltbench import environment, registry
from ltbench.metrics import group_accuracy, group_sizes
from ltbench.models import create_backbone
from ltbench.spec import RunSpec
from ltbench.store import CorruptFile, RunStore
from ltbench.train import Reporter, Trainer

SPEC_COLUMNS = ("method", "dataset", "imbalance_factor", "profile", "backbone", "seed", "epochs", "batch_size", "preset")


def execute(spec: RunSpec, results_dir, device: str = "auto", reporter: Reporter | None = None,
            data_root=None, log=print) -> str:
    """Train (or resume) one run and store its result. Returns "done" or "failed"; a failure
    is recorded in the result row with its reason rather than raised, so a sweep goes on.
    Ctrl-C is not a failure: it propagates, and the last epoch checkpoint stays valid."""
    store = RunStore(results_dir)
    store.write_spec(spec)
    # a retry starts from the last good checkpoint; the old failure row must not outlive it
    (store.run_dir(spec.run_id) / "result.csv").unlink(missing_ok=True)
    started = environment.now()
    torch_device = None
    try:
        torch_device = environment.resolve_device(device)
        trainer = build_trainer(spec, torch_device, store, reporter, data_root)
        try:
            state = store.load_checkpoint(spec.run_id)
        except CorruptFile as exc:
            log(f"[{spec.run_id}] {exc}; starting the run over")
            state = None
        if state is not None:
            trainer.load_state_dict(state)
            log(f"[{spec.run_id}] resuming from epoch {trainer.start_epoch} of {spec.epochs}")
        outcome = trainer.fit()
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        (store.run_dir(spec.run_id) / "error.log").write_text(traceback.format_exc())
        store.write_result(result_row(spec, status="failed", error=detail, started=started, device=torch_device))
        return "failed"
    counts, data = outcome.final, trainer.data
    per_class = [
        {"class": c, "n_train": n, "correct": int(counts.correct[c]), "total": int(counts.total[c])}
        for c, n in enumerate(data.class_counts)
    ]
    convention = spec.params["mmf_convention"]
    groups = group_accuracy(counts, data.class_counts, convention)
    sizes = group_sizes(data.class_counts, convention)
    row = result_row(
        spec, status="done", started=started, device=torch_device,
        top1=round(counts.top1, 4), top1_best=round(outcome.best_top1, 4), top1_best_epoch=outcome.best_epoch + 1,
        **{g: (None if acc is None else round(acc, 4)) for g, acc in groups.items()},
        **{f"n_{g}": n for g, n in sizes.items()},
        n_train=len(data.train_y), n_classes=data.num_classes, wall_s=round(outcome.train_seconds, 2),
        images_per_s=round(outcome.images_seen / max(outcome.train_seconds, 1e-9), 1),
        peak_mem_mb=round(environment.peak_memory_mb(torch_device), 1),
    )
    store.write_result(row, per_class)
    return "done"


def build_trainer(spec: RunSpec, device: torch.device, store: RunStore, reporter=None, data_root=None) -> Trainer:
    data = registry.dataset(spec.dataset).build(data_root, spec.imbalance_factor, spec.profile, spec.n_max)
    # Model initialisation draws from the global RNG: seed it so a run is a function of its spec.
    torch.manual_seed(spec.seed)
    backbone = create_backbone(spec.backbone, data.in_chans)
    method = registry.method(spec.method)(spec.params, data.class_counts, backbone.num_features)
    return Trainer(
        data=data, backbone=backbone, method=method, params=spec.params, epochs=spec.epochs,
        batch_size=spec.batch_size, seed=spec.seed, device=device, reporter=reporter or Reporter(),
        save_checkpoint=lambda state: store.save_checkpoint(spec.run_id, state), label=spec.label,
    )


def result_row(spec: RunSpec, status: str, started: str, device=None, error: str = "", **values) -> dict:
    return {
        "run_id": spec.run_id,
        **{k: getattr(spec, k) for k in SPEC_COLUMNS},
        "params": json.dumps(spec.params, sort_keys=True),
        "mmf_convention": spec.params.get("mmf_convention", ""),
        "device": environment.device_label(device) if device is not None else "",
        "torch": torch.__version__,
        "ltbench_version": ltbench.__version__,
        "git_sha": environment.git_sha(),
        "started_at": started,
        "finished_at": environment.now(),
        "status": status,
        "error": error,
        "slurm_job_id": environment.slurm_job_id(),
        **values,
    }


def run_local(specs: list[RunSpec], results_dir, device: str = "auto", reporter_factory=None, log=print) -> dict:
    """Run specs one after another in this process; returns run_id -> status."""
    statuses = {}
    for i, spec in enumerate(specs, 1):
        log(f"[{i}/{len(specs)}] {spec.label} ({spec.run_id})")
        reporter = reporter_factory() if reporter_factory else None
        statuses[spec.run_id] = execute(spec, results_dir, device, reporter, log=log)
        if statuses[spec.run_id] == "failed":
            row = RunStore(results_dir).read_result(spec.run_id)
            log(f"  failed: {row['error']} (see {RunStore(results_dir).run_dir(spec.run_id) / 'error.log'})")
    return statuses
