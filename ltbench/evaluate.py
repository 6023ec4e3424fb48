"""`ltbench evaluate`: what a finished run's last checkpoint says about the test set, added to
its folder without training it again: today its per-image predictions (predictions.npz), from
which the report computes calibration. A run trained without `save_predictions` gets them
later this way.

The checkpoint holds the weights the run ended with, post-hoc choices included (they are made
before the last epoch's checkpoint), so its top-1 on the test set is the result row's: a
re-evaluation that gives another is reported, and nothing is written for that run. A run that
has its predictions is left as it is, so running the command again changes nothing.
"""

from ltbench import environment, runner, stages
from ltbench.results_schema import PREDICTIONS_FILE
from ltbench.run_context import RunContext
from ltbench.shared_store import open_store


def evaluate_runs(results_dir, device: str = "auto", context: RunContext | None = None, log=print) -> int:
    """Adds predictions to every finished run of `results_dir` that has none, reading their
    data where `context` says; the exit status."""
    context = context or RunContext()
    store = open_store(results_dir)
    store.ensure_readable()
    done = [run_id for run_id in store.run_ids() if store.state(run_id) == "done"]
    todo = [run_id for run_id in done if not (store.run_dir(run_id) / PREDICTIONS_FILE).exists()]
    log(f"{len(done)} finished runs, {len(done) - len(todo)} with predictions already, {len(todo)} to evaluate")
    torch_device = environment.resolve_device(device)
    failed = 0
    for i, run_id in enumerate(todo, 1):
        spec = store.read_spec(run_id)
        head = f"[{i}/{len(todo)}] {spec.label} ({run_id})"
        if not store.checkpoint_path(run_id).exists():
            log(f"{head}: no checkpoint to evaluate; skipped")
            failed += 1
            continue
        first = stages.stage1_spec(spec)
        if first is not None and not (store.state(first.run_id) == "done" and store.checkpoint_path(first.run_id).exists()):
            # its stage-2 weights sit on that backbone; evaluate never trains
            log(f"{head}: its stage-1 run {first.run_id} is not in the store with a checkpoint; skipped")
            failed += 1
            continue
        stage1 = runner.ensure_stage1(spec, results_dir, device, context=context, log=log)
        trainer = runner.build_trainer(spec, torch_device, store, context=context, stage1=stage1)
        state = store.load_checkpoint(run_id)
        runner.check_same_data(store.checkpoint_path(run_id), state, trainer.data)
        trainer.load_state_dict(state)
        counts, predictions = trainer.evaluate_test_set(predictions=True)
        recorded = float(store.read_result(run_id)["top1"])
        if abs(round(counts.top1, 4) - recorded) > 0.01:
            log(f"{head}: its checkpoint gives top-1 {counts.top1:.2f} %, its result row {recorded:.2f} %: "
                "not the weights the result came from; nothing written")
            failed += 1
            continue
        store.write_predictions(run_id, predictions)
        log(f"{head}: predictions written, top-1 {counts.top1:.2f} % as recorded")
    if todo:
        log(f"next: ltbench report --results-dir {results_dir}")
    return 1 if failed else 0
