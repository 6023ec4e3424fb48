"""What a run leaves besides its result: history.csv (one row per epoch, with the method's
recorded loss parts), one log line per epoch where output is not a terminal, the test-set
predictions, TensorBoard events when asked, and a partial run's progress in `ltbench status`."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ltbench.cli import main
from ltbench.results_schema import HISTORY_FILE, PREDICTIONS_FILE
from ltbench.runner import execute
from ltbench.store import RunStore
from ltbench.sweep import Sweep, expand
from ltbench.train import Reporter

pytestmark = pytest.mark.slow  # each test trains real runs

SMOKE = ["run", "--dataset", "fashion_mnist_lt", "--if", "100", "--preset", "smoke", "--device", "cpu"]


def only_run(results) -> tuple[RunStore, str]:
    store = RunStore(results)
    (run_id,) = store.run_ids()
    return store, run_id


def test_history_has_a_row_per_epoch_with_the_hybrids_parts(tmp_path, fashion_mnist):
    assert main(SMOKE + ["--methods", "sc_hybrid", "--epochs", "4", "--set", "eval_every=2",
                         "--results-dir", str(tmp_path)]) == 0
    store, run_id = only_run(tmp_path)
    history = store.read_history(run_id)
    assert list(history[0]) == ["epoch", "lr", "loss", "loss_feature", "loss_classifier", "alpha", "images_per_s",
                                "wall_s", "top1", "many", "medium", "few", "val_top1", "val_many", "val_medium",
                                "val_few"]
    assert [row["epoch"] for row in history] == ["1", "2", "3", "4"]
    # alpha = 1 - (T / T_max)^2 at the end of each epoch; the loss is its mix of both parts
    assert [float(row["alpha"]) for row in history] == pytest.approx([1 - (e / 4) ** 2 for e in (1, 2, 3, 4)],
                                                                     abs=1e-5)
    for row in history:
        a = float(row["alpha"])
        mixed = a * float(row["loss_feature"]) + (1 - a) * float(row["loss_classifier"])
        assert float(row["loss"]) == pytest.approx(mixed, rel=1e-4)
    # evaluated on epochs 2 and 4 only; the last one is the result row's top-1
    assert [bool(row["top1"]) for row in history] == [False, True, False, True]
    assert float(history[-1]["top1"]) == pytest.approx(float(store.read_result(run_id)["top1"]), abs=0.01)
    assert all(float(b["wall_s"]) > float(a["wall_s"]) for a, b in zip(history, history[1:]))


def test_every_evaluated_epoch_is_scored_on_validation_and_the_best_chooses_top1_bestval(tmp_path, fashion_mnist):
    assert main(SMOKE + ["--methods", "ce", "--epochs", "4", "--set", "eval_every=1", "--results-dir",
                         str(tmp_path)]) == 0
    store, run_id = only_run(tmp_path)
    history, row = store.read_history(run_id), store.read_result(run_id)
    val = [float(r["val_top1"]) for r in history]
    assert len(val) == 4 and all(r["val_many"] != "" for r in history)
    # the smoke preset keeps 200 to 2 images a class of 6000: every class gives 50 to validation
    assert int(row["n_val"]) == 500 and float(row["val_top1"]) == pytest.approx(val[-1], abs=0.01)
    best = val.index(max(val))  # the first epoch of the best validation top-1
    assert int(row["top1_bestval_epoch"]) == best + 1
    assert float(row["top1_bestval"]) == pytest.approx(float(history[best]["top1"]), abs=0.01)
    # top1_best, chosen on test, stays beside it
    assert float(row["top1_best"]) == pytest.approx(max(float(r["top1"]) for r in history), abs=0.01)


def test_drw_methods_record_when_reweighting_is_on(tmp_path, fashion_mnist):
    # drw_start 0.5 of 4 epochs: epochs 3 and 4 re-weight
    assert main(SMOKE + ["--methods", "ce_drw", "--epochs", "4", "--set", "drw_start=0.5",
                         "--results-dir", str(tmp_path)]) == 0
    store, run_id = only_run(tmp_path)
    assert [row["drw"] for row in store.read_history(run_id)] == ["0", "0", "1", "1"]


def test_predictions_agree_with_the_per_class_counts(tmp_path, fashion_mnist):
    assert main(SMOKE + ["--methods", "focal", "--set", "save_predictions=true", "--results-dir", str(tmp_path)]) == 0
    store, run_id = only_run(tmp_path)
    saved = np.load(store.run_dir(run_id) / PREDICTIONS_FILE)
    label, predicted = saved["label"], saved["predicted"]
    assert len(label) == 10_000 and saved["topk_classes"].shape == (10_000, 5)
    assert (saved["topk_classes"][:, 0] == predicted).all()
    assert ((saved["confidence"] > 0) & (saved["confidence"] <= 1)).all()
    for row in store.read_per_class(run_id):
        c = int(row["class"])
        assert int(row["correct"]) == int(((label == c) & (predicted == c)).sum())
        assert int(row["total"]) == int((label == c).sum())
    # off by default outside the paper preset
    other = tmp_path / "default"
    assert main(SMOKE + ["--methods", "focal", "--results-dir", str(other)]) == 0
    store, run_id = only_run(other)
    assert not (store.run_dir(run_id) / PREDICTIONS_FILE).exists()


def test_a_redirected_run_logs_each_epoch_while_it_runs(tmp_path, fashion_mnist):
    """The log of a run whose output goes to a file shows epoch lines before the run ends."""
    log = tmp_path / "log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ltbench.cli", *SMOKE, "--methods", "ce", "--epochs", "30",
                                 "--results-dir", str(tmp_path / "results")], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_NUM_THREADS": "1"},
                                # a shell's background job starts with SIGINT ignored, which the child
                                # would keep: give it a terminal's Ctrl-C, as tests/test_resume.py does
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 120
        while "epoch 2/30" not in log.read_text():
            assert proc.poll() is None, f"the run ended before its log showed epoch 2:\n{log.read_text()}"
            assert time.time() < deadline, log.read_text()
            time.sleep(0.05)
        seen_while_running = proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert seen_while_running
    line = next(line for line in log.read_text().splitlines() if "epoch 2/30" in line)
    assert line.startswith("ce fashion_mnist_lt IF100 seed0") and "loss " in line and "img/s" in line
    assert "ETA" in line and "top-1" in line  # smoke evaluates every 2 epochs


def test_tensorboard_events_only_when_asked(tmp_path, fashion_mnist):
    """Nothing of TensorBoard is imported by a run that does not ask for it."""
    script = (
        "import sys\n"
        "from ltbench.cli import main\n"
        f"code = main({SMOKE + ['--methods', 'ce', '--results-dir']!r} + [sys.argv[1]] + sys.argv[2:])\n"
        "print('IMPORTED' if any(m.startswith(('tensorboard', 'torch.utils.tensorboard')) for m in sys.modules)"
        " else 'NOT IMPORTED')\n"
        "sys.exit(code)\n"
    )
    plain = subprocess.run([sys.executable, "-c", script, str(tmp_path / "plain")], capture_output=True, text=True)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip().endswith("NOT IMPORTED")
    asked = subprocess.run([sys.executable, "-c", script, str(tmp_path / "tb"), "--set", "log_tensorboard=true"],
                           capture_output=True, text=True)
    assert asked.returncode == 0, asked.stderr
    store, run_id = only_run(tmp_path / "tb")
    events = list((store.run_dir(run_id) / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = EventAccumulator(str(events[0].parent)).Reload()
    assert [e.step for e in scalars.Scalars("loss")] == [1, 2]
    # the same run id either way: where the history also goes does not change the experiment
    assert RunStore(tmp_path / "plain").run_ids() == [run_id]


class StopAfter(Reporter):
    def __init__(self, epoch):
        self.epoch = epoch

    def epoch_end(self, record):
        if record["epoch"] == self.epoch:
            raise KeyboardInterrupt


def test_status_shows_how_far_a_partial_run_got(tmp_path, fashion_mnist, capsys):
    (spec,) = expand(Sweep(methods=["ce"], datasets=["fashion_mnist_lt"], imbalance_factors=[100], seeds=[0],
                           preset="smoke", overrides={"epochs": 5, "eval_every": 2}))
    with pytest.raises(KeyboardInterrupt):
        execute(spec, tmp_path, "cpu", reporter=StopAfter(3))
    assert RunStore(tmp_path).state(spec.run_id) == "partial"
    capsys.readouterr()
    assert main(["status", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "epoch 3 of 5" in out and "top-1" in out and "at epoch 2" in out
    assert (RunStore(tmp_path).run_dir(spec.run_id) / HISTORY_FILE).exists()
