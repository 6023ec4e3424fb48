"""`ltbench evaluate`: what a finished run's last checkpoint says about the test set, added to
its folder without training it again: today its per-image predictions (predictions.npz), from
which the report computes calibration. A run trained without `save_predictions` gets them
later this way.

The checkpoint holds the weights the run ended with, post-hoc choices included (they are made
before the last epoch's checkpoint), so its top-1 on the test set is the result row's: a
re-evaluation that gives another is reported, and nothing is written for that run. A run that
has its predictions is left as it is, so running the command again changes nothing.

Runs are evaluated as `ltbench run` trains them: one after another here, `--jobs N` at once
(ltbench.launch.jobs) or as a Slurm array (ltbench.launch.slurm), each evaluation holding the
run's lock (ltbench.run_lock), so no two processes evaluate one run at once.
"""

from ltbench import environment, run_lock, runner, stages
from ltbench.checkpoints import CheckpointRefused
from ltbench.errors import CorruptFile, UserError
from ltbench.launch.tasks import EVALUATE, evaluated
from ltbench.run_context import RunContext
from ltbench.shared_store import open_store
from ltbench.spec import RunSpec


def evaluate_runs(results_dir, device: str = "auto", context: RunContext | None = None, log=print,
                  plan=None, slurm_args=None) -> int:
    """Adds predictions to every finished run of `results_dir` that has none, reading their
    data where `context` says: one after another here on `device`, as a `--jobs` JobPlan
    says (ltbench.launch.job_plan), or as a Slurm array with `slurm_args` (the parsed
    --slurm-* flags). The exit status."""
    context = context or RunContext()
    store = open_store(results_dir)
    store.ensure_readable()
    done = [run_id for run_id in store.run_ids() if store.state(run_id) == "done"]
    todo = [store.read_spec(run_id) for run_id in done if not evaluated(store, run_id)]
    log(f"{len(done)} finished runs, {len(done) - len(todo)} with predictions already, {len(todo)} to evaluate")
    if not todo:
        return 0
    if slurm_args is not None:
        from ltbench.launch import slurm
        return slurm.launch_evaluations(todo, results_dir, slurm_args, device, context)
    if plan is not None and plan.jobs > 1:
        from ltbench.launch.jobs import run_jobs
        statuses = run_jobs(todo, results_dir, plan, log=log, context=context, task=EVALUATE)
    else:
        statuses = {}
        for i, spec in enumerate(todo, 1):
            log(f"[{i}/{len(todo)}] {spec.label} ({spec.run_id})")
            statuses[spec.run_id] = evaluate_run(spec, results_dir, device, context, log, wait=True)
    log(f"next: ltbench report --results-dir {results_dir}")
    return 1 if "failed" in statuses.values() else 0


def evaluate_run(spec: RunSpec, results_dir, device: str = "auto", context: RunContext | None = None, log=print,
                 wait: bool = False) -> str:
    """Adds predictions to one finished run, holding its lock; done (written now, or found
    written), failed (said why), or busy: another process holds the run (with `wait`, this
    waits for it instead)."""
    store = open_store(results_dir)
    head = f"[{spec.run_id}] {spec.label}"
    with run_lock.holding(store.run_dir(spec.run_id), wait,
                          on_wait=lambda: log(f"{head}: another process holds it; waiting for it")) as held:
        if not held:
            return "busy"
        if evaluated(store, spec.run_id):
            log(f"{head}: evaluated meanwhile, by another process")
            return "done"
        try:
            written, said = _evaluate(spec, store, results_dir, device, context or RunContext(), log)
        except (CheckpointRefused, CorruptFile, UserError) as exc:  # this run's own; the others go on
            written, said = False, str(exc)
    log(f"{head}: {said}")
    return "done" if written else "failed"


def _evaluate(spec: RunSpec, store, results_dir, device: str, context: RunContext, log) -> tuple[bool, str]:
    """evaluate_run's work, with the run's lock held: whether the predictions were written,
    and what came of it in words."""
    if not store.checkpoint_path(spec.run_id).exists():
        return False, "no checkpoint to evaluate; skipped"
    first = stages.stage1_spec(spec)
    if first is not None and not (store.state(first.run_id) == "done" and store.checkpoint_path(first.run_id).exists()):
        # its stage-2 weights sit on that backbone; evaluate never trains
        return False, f"its stage-1 run {first.run_id} is not in the store with a checkpoint; skipped"
    stage1 = runner.ensure_stage1(spec, results_dir, device, context=context, log=log)
    trainer = runner.build_trainer(spec, environment.resolve_device(device), store, context=context, stage1=stage1)
    runner.load_checkpoint_into(trainer, store, spec.run_id)
    counts, predictions = trainer.evaluate_test_set(predictions=True)
    recorded = float(store.read_result(spec.run_id)["top1"])
    if abs(round(counts.top1, 4) - recorded) > 0.01:
        return False, (f"its checkpoint gives top-1 {counts.top1:.2f} %, its result row {recorded:.2f} %: "
                       "not the weights the result came from; nothing written")
    store.write_predictions(spec.run_id, predictions)
    return True, f"predictions written, top-1 {counts.top1:.2f} % as recorded"
