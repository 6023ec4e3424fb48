"""A two-stage method's stage 2 from the stage-1 epoch best on validation (stage1_epoch =
bestval, classifier-balancing's rule), the last epoch by default with the run ids of before."""

import pytest
import torch

from ltbench.cli import main
from ltbench.store import RunStore
from ltbench.sweep import resolve

# eval_every 1: both smoke epochs are scored on validation. On Fashion-MNIST-LT at seed 0 the
# first is the better one (checked below), so the best-on-validation epoch is not the last
SMOKE = ["run", "--dataset", "fashion_mnist_lt", "--if", "100", "--preset", "smoke", "--device", "cpu",
         "--set", "eval_every=1"]
CRT = ["--set", "crt.crt_epochs=1"]


def runs(results) -> dict:
    """(method, stage1_epoch) -> (run id, result row, checkpoint)."""
    store = RunStore(results)
    found = {}
    for run_id in store.run_ids():
        spec = store.read_spec(run_id)
        key = (spec.method, spec.own_hyperparameters.get("stage1_epoch", "last"))
        found[key] = (run_id, store.read_result(run_id), store.load_checkpoint(run_id))
    return found


def frozen(weights: dict) -> dict:
    """The weights stage 2 does not train: a BatchNorm's running statistics follow its batches."""
    return {k: v for k, v in weights.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_stage2_starts_from_the_stage1_epoch_best_on_validation(tmp_path, fashion_mnist):
    results = str(tmp_path / "results")
    assert main([*SMOKE, *CRT, "--methods", "ce,crt", "--set", "crt.stage1_epoch=bestval", "--results-dir", results]) == 0
    assert main([*SMOKE, *CRT, "--methods", "crt", "--results-dir", results]) == 0  # the default: the last epoch
    found = runs(results)
    ce_id, ce, first = found[("ce", "last")]
    assert int(ce["top1_bestval_epoch"]) == 1 < int(ce["epochs"]) == 2, ce  # the premise: not the last epoch
    best, last = frozen(first["bestval_weights"]["backbone"]), frozen(first["backbone"])
    assert not same(best, last)
    for stage1_epoch, expected, other in (("bestval", best, last), ("last", last, best)):
        _, row, state = found[("crt", stage1_epoch)]
        assert row["status"] == "done" and row["stage1_run_id"] == ce_id, row
        # stage 2's frozen backbone holds that epoch's weights, and not the other's
        backbone = frozen({k.removeprefix("backbone."): v for k, v in state["backbone"].items()})
        assert same(backbone, expected) and not same(backbone, other), stage1_epoch
    # the default keeps its run id of before; bestval is another run, labelled custom
    assert found[("crt", "last")][0] == resolve("crt", "fashion_mnist_lt", 100, 0, "smoke",
                                                 {"eval_every": "1", "crt_epochs": "1"}).run_id
    assert "stage1_epoch" not in found[("crt", "last")][1]["params"]
    assert '"stage1_epoch": "bestval"' in found[("crt", "bestval")][1]["params"]


@pytest.mark.slow
def test_a_stage1_without_best_on_validation_weights_is_refused_with_the_way_out(tmp_path, fashion_mnist, capsys):
    results = tmp_path / "results"
    assert main([*SMOKE, "--methods", "ce", "--results-dir", str(results)]) == 0
    store = RunStore(results)
    [ce_id] = store.run_ids()
    state = store.load_checkpoint(ce_id)
    del state["bestval_weights"]  # as a checkpoint of an earlier version
    for stamp in ("run_id", "spec"):
        del state[stamp]
    store.save_checkpoint(store.read_spec(ce_id), state)
    assert main([*SMOKE, "--methods", "tau_norm", "--set", "stage1_epoch=bestval", "--results-dir", str(results)]) == 1
    [row] = [store.read_result(r) for r in store.run_ids() if r != ce_id]
    assert row["status"] == "failed"
    assert f"stage1_epoch = bestval: stage-1 run {ce_id}" in row["error"], row["error"]
    assert "kept no weights of an epoch best on validation" in row["error"]
