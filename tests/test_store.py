import os

import pytest
import torch

from ltbench.errors import UserError
from ltbench.spec import RunSpec
from ltbench.store import RESULT_COLUMNS, CorruptFile, RunStore, atomic_write_bytes


def spec():
    return RunSpec("ce", "fashion_mnist_lt", 100.0, "exp", "resnet8_cifar", 0, 2, 64, 60, "smoke", {"lr": 0.1})


def test_state_follows_the_files(tmp_path):
    store, s = RunStore(tmp_path), spec()
    assert store.state(s.run_id) == "missing"
    store.write_spec(s)
    assert store.state(s.run_id) == "partial" and store.read_spec(s.run_id) == s
    store.write_result({"run_id": s.run_id, "status": "failed", "error": "boom"})
    assert store.state(s.run_id) == "failed"
    store.write_result({"run_id": s.run_id, "status": "done", "top1": 50.0}, [{"class": 0, "n_train": 5, "correct": 1, "total": 2}])
    assert store.state(s.run_id) == "done" and store.read_result(s.run_id)["top1"] == "50.0"
    assert list(store.read_result(s.run_id)) == RESULT_COLUMNS
    assert store.run_ids() == [s.run_id]


def test_corrupt_result_is_reported_not_trusted(tmp_path):
    store, s = RunStore(tmp_path), spec()
    store.write_spec(s)
    (store.run_dir(s.run_id) / "result.csv").write_text("garbage\n\x00\x01")
    assert store.state(s.run_id) == "corrupt"
    with pytest.raises(CorruptFile, match="result.csv"):
        store.read_result(s.run_id)


def test_corrupt_checkpoint_is_moved_aside(tmp_path):
    store, s = RunStore(tmp_path), spec()
    store.save_checkpoint(s, {"epoch": 3, "w": torch.ones(2)})
    assert store.load_checkpoint(s.run_id)["epoch"] == 3
    store.checkpoint_path(s.run_id).write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptFile, match="could not be read"):
        store.load_checkpoint(s.run_id)
    assert (store.run_dir(s.run_id) / "checkpoint.corrupt.pt").exists()
    assert store.load_checkpoint(s.run_id) is None


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "result.csv"
    atomic_write_bytes(path, b"old")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.csv"]  # no temp file left behind


def test_unwritable_results_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="not writable"):
        RunStore(blocker / "results").ensure_writable()
