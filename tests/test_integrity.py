"""Nothing runs code it should not, and a result can never be attached to the wrong run:
planted checkpoints and dataset files, files copied between runs, crafted result rows, and
the permissions of what the store writes."""

import io
import json
import os
import pickle
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from ltbench.cli import main
from ltbench.data.datasets import DATASETS, LongTailData
from ltbench.data.sources import read_fashion_mnist
from ltbench.errors import UserError
from ltbench.migrate import migrate_store
from ltbench.report.render import markdown_table
from ltbench.report.tables import Table
from ltbench.runner import check_same_data
from ltbench.spec import RunSpec
from ltbench.stages import stage1_spec
from ltbench.checkpoints import CheckpointRefused
from ltbench.store import SET_ASIDE, RunStore, atomic_write_bytes, make_dirs, owner_writes_only
from ltbench.sweep import resolve
from test_bad_input import fake_fashion

SMOKE = ["run", "--dataset", "fashion_mnist_lt", "--if", "100", "--preset", "smoke", "--epochs", "1",
         "--device", "cpu"]
FIXTURE = Path(__file__).parent / "fixtures" / "results_v0_1"


def smoke_spec(method="ce", seed=0) -> RunSpec:
    """The spec `ltbench run SMOKE --methods METHOD` resolves to: its run id is predictable."""
    return resolve(method, "fashion_mnist_lt", 100, seed, "smoke", {"epochs": "1"})


class WritesAFile:
    """Unpickling this writes `marker`: what a planted checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


def malicious_bytes(kind: str, marker: Path) -> bytes:
    payload = {"epoch": 0, "best_top1": WritesAFile(marker)}
    if kind == "raw pickle":
        return pickle.dumps(payload)
    buffer = io.BytesIO()
    torch.save(payload, buffer, _use_new_zipfile_serialization=kind == "torch.save")
    return buffer.getvalue()


KINDS = ["torch.save", "legacy torch.save", "raw pickle"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_planted_checkpoint_runs_no_code_and_the_run_refuses_it(kind, tmp_path, fashion_mnist, capsys):
    results, marker, spec = tmp_path / "results", tmp_path / "marker", smoke_spec()
    planted = RunStore(results).checkpoint_path(spec.run_id)
    planted.parent.mkdir(parents=True)
    planted.write_bytes(malicious_bytes(kind, marker))
    # the payload is real: plain unpickling runs it
    if kind == "raw pickle":
        pickle.loads(planted.read_bytes())
        assert marker.exists()
        marker.unlink()

    capsys.readouterr()
    assert main(SMOKE + ["--methods", "ce", "--results-dir", str(results)]) == 1
    assert not marker.exists(), "the planted checkpoint ran code"
    assert f"checkpoint {planted} is not plain data" in capsys.readouterr().out.replace("\n", "")
    row = RunStore(results).read_result(spec.run_id)
    assert row["status"] == "failed" and str(planted) in row["error"] and "not plain data" in row["error"]
    assert planted.read_bytes() == malicious_bytes(kind, marker)  # left where it was, for the user to look at
    assert main(["status", "--results-dir", str(results)]) == 0
    assert "1 failed" in capsys.readouterr().out
    # run again: refused again, never loaded, never moved out of the way silently
    assert main(SMOKE + ["--methods", "ce", "--results-dir", str(results)]) == 1
    assert not marker.exists() and RunStore(results).state(spec.run_id) == "failed"


def test_a_planted_stage1_checkpoint_stops_the_two_stage_run(tmp_path, fashion_mnist):
    """A done stage-1 run whose checkpoint was replaced: the cRT run must not finish on it."""
    results, marker = tmp_path / "results", tmp_path / "marker"
    crt, store = smoke_spec("crt"), RunStore(tmp_path / "results")
    first = stage1_spec(crt)
    store.write_spec(first)
    store.write_result({"run_id": first.run_id, "method": "ce", "status": "done", "top1": 50.0, "peak_mem_mb": 1})
    store.checkpoint_path(first.run_id).write_bytes(malicious_bytes("torch.save", marker))

    assert main(SMOKE + ["--methods", "crt", "--results-dir", str(results)]) == 1
    assert not marker.exists()
    row = store.read_result(crt.run_id)
    assert row["status"] == "failed" and str(store.checkpoint_path(first.run_id)) in row["error"]
    assert store.state(first.run_id) == "done"  # the stage-1 run's own files are left alone


def test_a_checkpoint_names_its_run_and_another_run_s_is_refused(tmp_path):
    store, a, b = RunStore(tmp_path), smoke_spec(seed=0), smoke_spec(seed=1)
    store.save_checkpoint(a, {"epoch": 3, "w": torch.ones(2)})
    state = store.load_checkpoint(a.run_id)
    assert state["run_id"] == a.run_id and RunSpec.from_dict(state["spec"]) == a and state["epoch"] == 3
    store.checkpoint_path(b.run_id).parent.mkdir()
    shutil.copy(store.checkpoint_path(a.run_id), store.checkpoint_path(b.run_id))
    with pytest.raises(CheckpointRefused, match="copied from another run") as refused:
        store.load_checkpoint(b.run_id)
    assert str(store.checkpoint_path(b.run_id)) in str(refused.value)
    assert store.checkpoint_path(b.run_id).exists()
    # one that names no run at all (ltbench 0.1's, or anyone's)
    buffer = io.BytesIO()
    torch.save({"epoch": 3}, buffer)
    store.checkpoint_path(b.run_id).write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointRefused, match="names no run"):
        store.load_checkpoint(b.run_id)
    # one whose run id was edited to match but whose spec is another run's
    buffer = io.BytesIO()
    torch.save({"epoch": 3, "run_id": b.run_id, "spec": a.to_dict()}, buffer)
    store.checkpoint_path(b.run_id).write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointRefused, match="holds the spec of run"):
        store.load_checkpoint(b.run_id)


def test_a_checkpoint_of_other_data_is_not_resumed_from(tmp_path):
    def data(flip_one_label=False):
        train_y = np.repeat(np.arange(3), 4)
        if flip_one_label:
            train_y[0] = 1
        return LongTailData("toy", np.zeros((12, 1, 4, 4), np.uint8), train_y, np.zeros((3, 1, 4, 4), np.uint8),
                            np.arange(3), [4, 4, 4], (0.5,), (0.5,))

    state = {"split_fingerprint": data().split_fingerprint}
    check_same_data(tmp_path / "checkpoint.pt", state, data())
    assert data(True).split_fingerprint != data().split_fingerprint
    with pytest.raises(CheckpointRefused, match="other data"):
        check_same_data(tmp_path / "checkpoint.pt", state, data(True))


@pytest.mark.slow
def test_a_folder_whose_files_name_another_run_is_corrupt_and_set_aside(tmp_path, fashion_mnist, capsys):
    results, ce, focal = tmp_path / "results", smoke_spec("ce"), smoke_spec("focal")
    store = RunStore(results)
    # focal's spec.json in ce's folder: status must not label the row focal
    store.write_spec(focal)
    os.rename(store.run_dir(focal.run_id), store.run_dir(ce.run_id))
    state, why = store.inspect(ce.run_id)
    assert state == "corrupt" and focal.run_id in why and "not of the folder's run" in why
    assert main(["status", "--results-dir", str(results)]) == 0
    out = capsys.readouterr().out
    assert "corrupt" in out and "focal" not in out.split("corrupt")[0].split(ce.run_id)[-1]

    assert main(SMOKE + ["--methods", "ce", "--results-dir", str(results)]) == 0
    assert "the run starts over" in capsys.readouterr().out
    assert store.state(ce.run_id) == "done" and store.read_spec(ce.run_id) == ce
    (aside,) = (results / SET_ASIDE).iterdir()  # moved, never deleted
    assert json.loads((aside / "spec.json").read_text())["method"] == "focal"


def test_a_result_row_must_agree_with_its_folder_and_spec(tmp_path):
    store, spec = RunStore(tmp_path), smoke_spec()
    store.write_spec(spec)
    row = {"run_id": spec.run_id, "method": "ce", "dataset": "fashion_mnist_lt", "seed": 0, "status": "done",
           "top1": 50.0, "imbalance_factor": 100.0}
    store.write_result(row)
    assert store.state(spec.run_id) == "done"
    for change, why in [({"method": "focal"}, "disagree with the run's spec.json"),
                        ({"seed": 1}, "disagree"), ({"imbalance_factor": 10}, "disagree"),
                        ({"top1": "abc"}, "not a number"), ({"top1": "nan"}, "not a number"),
                        ({"status": "finished"}, "is not one of done, failed")]:
        store.write_result({**row, **change})
        state, reason = store.inspect(spec.run_id)
        assert state == "corrupt" and why in reason, change
    path = store.run_dir(spec.run_id) / "result.csv"
    path.write_text(path.read_text().replace(spec.run_id, "0" * 12))
    assert "not the folder's run" in store.inspect(spec.run_id)[1]


def test_crafted_text_is_shown_never_read_as_markup(tmp_path, capsys):
    """`ltbench status` prints what a spec says as text (rich markup in it would raise or restyle)."""
    crafted = RunSpec(**{**smoke_spec().to_dict(), "method": "[/bold]<b>x</b>[link=http://x]"})
    RunStore(tmp_path).write_spec(crafted)
    assert main(["status", "--results-dir", str(tmp_path)]) == 0
    assert "[/bold]<b>x</b>[link=http://x]" in capsys.readouterr().out


def test_markdown_report_cells_carry_no_html():
    table = Table(header=["Method", "<i>IF</i>"], rows=[["<script>alert(1)</script>", "a|b\nc"]],
                  title="<img src=x onerror=alert(1)>", notes=["<b>note</b>"])
    text = markdown_table(table)
    assert "<" not in text and ">" not in text.replace("-->", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "a\\|b c" in text


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o644, 0o755),
                                                        (0o077, 0o600, 0o700), (0o000, 0o644, 0o755)])
def test_files_get_the_umask_and_only_the_owner_writes(tmp_path, mask, file_mode, dir_mode):
    before = os.umask(mask)
    try:
        store, spec = RunStore(tmp_path / "a" / "results"), smoke_spec()
        store.ensure_writable()
        store.write_spec(spec)
        store.save_checkpoint(spec, {"epoch": 0})
        store.write_text(spec.run_id, "error.log", "boom")
        with owner_writes_only():
            (tmp_path / "a" / "results" / "slurm").mkdir()
            (tmp_path / "a" / "results" / "slurm" / "job.pkl").write_bytes(b"")
    finally:
        os.umask(before)
    for folder in (tmp_path / "a", store.root, store.run_dir(spec.run_id)):
        assert stat.S_IMODE(folder.stat().st_mode) == dir_mode, folder
    for name in ("spec.json", "checkpoint.pt", "error.log"):
        assert stat.S_IMODE((store.run_dir(spec.run_id) / name).stat().st_mode) == file_mode, name
    assert stat.S_IMODE((store.root / "slurm").stat().st_mode) & 0o022 == 0
    assert stat.S_IMODE((store.root / "slurm" / "job.pkl").stat().st_mode) & 0o022 == 0


def test_make_dirs_and_atomic_writes_leave_nothing_group_writable(tmp_path):
    before = os.umask(0o002)
    try:
        make_dirs(tmp_path / "x" / "y")
        atomic_write_bytes(tmp_path / "x" / "y" / "z" / "f", b"1")
    finally:
        os.umask(before)
    for path in (tmp_path / "x", tmp_path / "x" / "y", tmp_path / "x" / "y" / "z", tmp_path / "x" / "y" / "z" / "f"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o022 == 0, path


# ------------------------------------------------------------------ data


def test_gzipped_idx_files_are_read(tmp_path):
    plain = read_fashion_mnist(fake_fashion(tmp_path / "plain"))
    gzipped = read_fashion_mnist(fake_fashion(tmp_path / "gz", gz=True))
    for a, b in zip(plain, gzipped):
        assert np.array_equal(a, b)


def test_out_of_range_labels_never_train(tmp_path):
    from test_bad_input import labels_out_of_range

    root = fake_fashion(tmp_path, labels_out_of_range)
    with pytest.raises(UserError, match=r"286 training label\(s\) out of range 0..9: #0 \(label 200\)"):
        DATASETS["fashion_mnist_lt"].build(root, 10, n_max=100)


def test_a_planted_cifar_batch_runs_no_code(tmp_path):
    from test_datasets import write_cifar

    write_cifar(tmp_path, "cifar10")
    marker = tmp_path / "marker"
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(pickle.dumps({b"data": WritesAFile(marker), b"labels": [0]}))
    with pytest.raises(UserError, match="data_batch_3 is not a CIFAR batch file: it names builtins.exec"):
        DATASETS["cifar10_lt"].build(tmp_path, 100)
    assert not marker.exists()


def test_the_data_fingerprint_is_recorded_and_follows_the_data(tmp_path):
    root = fake_fashion(tmp_path / "a")
    same = DATASETS["fashion_mnist_lt"].build(root, 10, n_max=100).split_fingerprint
    assert same == DATASETS["fashion_mnist_lt"].build(root, 10, n_max=100).split_fingerprint
    other = fake_fashion(tmp_path / "b", lambda f: f.update(test_x=f["test_x"][:-1] + b"\x01"))
    assert DATASETS["fashion_mnist_lt"].build(other, 10, n_max=100).split_fingerprint != same


def test_a_checkpoint_of_ltbench_0_1_is_made_plain_and_named_on_migration(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(FIXTURE, results)
    old = "3b1304298ca5"
    buffer = io.BytesIO()
    torch.save({"epoch": 1, "best_top1": np.float64(12.5), "w": torch.ones(2), "counts": np.arange(3)}, buffer)
    (results / old / "checkpoint.pt").write_bytes(buffer.getvalue())
    renamed = migrate_store(results, log=lambda *_: None)
    new = renamed[old]
    if not (results / new / "checkpoint.pt").exists():  # this one was superseded by its twin
        pytest.skip("the fixture run with a checkpoint was superseded")
    state = RunStore(results).load_checkpoint(new)
    assert state["run_id"] == new and type(state["best_top1"]) is float and torch.equal(state["counts"],
                                                                                         torch.arange(3))


def test_rows_written_before_the_fingerprint_column_still_load_in_the_report(tmp_path):
    from ltbench.report.load import load_results
    from ltbench.results_schema import RESULT_COLUMNS

    old = [c for c in RESULT_COLUMNS if c != "split_fingerprint"]
    folder = tmp_path / "abc"
    folder.mkdir()
    values = {"run_id": "abc", "method": "ce", "dataset": "cifar10_lt", "imbalance_factor": "100", "profile": "exp",
              "backbone": "resnet32_cifar", "seed": "0", "epochs": "200", "batch_size": "128", "preset": "paper",
              "params": "{}", "top1": "70.5", "status": "done"}
    (folder / "result.csv").write_text(",".join(old) + "\n" + ",".join(values.get(c, "") for c in old) + "\n")
    runs = load_results(tmp_path).runs
    assert list(runs["run_id"]) == ["abc"] and runs["split_fingerprint"].iloc[0] == ""
