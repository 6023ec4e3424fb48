"""A run killed mid-way resumes from its last epoch checkpoint and ends exactly as an
uninterrupted run with the same seed would (CPU, deterministic)."""

import csv
import signal
import subprocess
import sys
import time

import pytest
import torch

from ltbench.cli import main
from ltbench.results_schema import HISTORY_FILE
from ltbench.store import RunStore

pytestmark = pytest.mark.slow  # each test trains real runs and interrupts them

ARGS = ["run", "--methods", "ce", "--dataset", "fashion_mnist_lt", "--if", "100", "--preset", "smoke",
        "--epochs", "4", "--set", "eval_every=4", "--device", "cpu"]


# what differs between two runs of the same spec: how fast they went
TIMING = ("images_per_s", "wall_s")


def outcome(results):
    """The run's result row, per-class counts, history.csv without its timing columns, weights."""
    store = RunStore(results)
    (run_id,) = store.run_ids()
    checkpoint = store.load_checkpoint(run_id)
    with open(store.run_dir(run_id) / HISTORY_FILE, newline="") as f:
        history = [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]
    return store.read_result(run_id), store.read_per_class(run_id), history, checkpoint["backbone"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, fashion_mnist):
    results = tmp_path_factory.mktemp("straight")
    assert main(ARGS + ["--results-dir", str(results)]) == 0
    return outcome(results)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["killed", "ctrl-c"])
def test_interrupted_run_resumes_to_the_same_result(tmp_path, uninterrupted, sig, capsys):
    results = tmp_path / "results"
    # a shell's background job starts with SIGINT ignored, and Python then installs no Ctrl-C
    # handler: the child gets the default disposition back, as a terminal would give it
    proc = subprocess.Popen([sys.executable, "-m", "ltbench.cli", *ARGS, "--results-dir", str(results)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not list(results.glob("*/checkpoint.pt")):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "Run the same command again to resume" in err
    store = RunStore(results)
    (run_id,) = store.run_ids()
    assert store.state(run_id) == "partial"
    epoch = store.load_checkpoint(run_id)["epoch"]
    assert epoch < 3, "the run finished before it could be interrupted"

    assert main(ARGS + ["--results-dir", str(results)]) == 0
    assert f"resuming from epoch {epoch + 1} of 4" in capsys.readouterr().out
    row, per_class, history, weights = outcome(results)
    straight_row, straight_per_class, straight_history, straight_weights = uninterrupted
    assert per_class == straight_per_class
    assert row["top1"] == straight_row["top1"] and row["run_id"] == straight_row["run_id"]
    validation = ("val_top1", "val_many", "n_val", "top1_bestval", "top1_bestval_epoch")
    assert [row[c] for c in validation] == [straight_row[c] for c in validation] and row["val_top1"] != ""
    # one row per epoch, none repeated or lost across the interruption, the same values
    assert [r["epoch"] for r in history] == ["1", "2", "3", "4"]
    assert history == straight_history
    for name, tensor in straight_weights.items():
        assert torch.equal(weights[name], tensor), name
