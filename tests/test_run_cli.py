"""`ltbench run` end to end on the real Fashion-MNIST with the smoke preset."""

import csv
import json

import pytest

from ltbench.cli import main
from ltbench.data.profiles import class_counts
from ltbench.store import RESULT_COLUMNS, RunStore

SMOKE = ["run", "--dataset", "fashion_mnist_lt", "--if", "100", "--preset", "smoke"]
OPTIONAL = {"error", "slurm_job_id", "git_sha", "stage1_run_id", "stage1_reused", "stage1_wall_s", "calibration",
            "tag", "teacher_run_id", "teacher_reused", "teacher_wall_s"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, fashion_mnist):
    results = tmp_path_factory.mktemp("results")
    code = main(SMOKE + ["--methods", "ce,focal", "--results-dir", str(results)])
    return results, code


def rows(results):
    store = RunStore(results)
    return {r["method"]: r for r in (store.read_result(i) for i in store.run_ids()) if r}


@pytest.mark.slow
def test_smoke_run_writes_complete_results(finished):
    results, code = finished
    assert code == 0
    got = rows(results)
    assert set(got) == {"ce", "focal"}
    for method, row in got.items():
        assert list(row) == RESULT_COLUMNS
        assert row["status"] == "done"
        assert [c for c in RESULT_COLUMNS if row[c] == "" and c not in OPTIONAL] == []
        assert (row["n_many"], row["n_medium"], row["n_few"]) == ("2", "3", "5")
        assert 0 <= float(row["top1"]) <= 100
        assert int(row["n_train"]) == sum(class_counts(10, 200, 100)) and row["preset"] == "smoke"
        assert row["mmf_convention"] == "cb" and json.loads(row["execution"])["channels_last"] is True
        assert int(row["threads"]) >= 1 and "channels_last" not in json.loads(row["params"])
        folder = results / row["run_id"]
        per_class = list(csv.DictReader(open(folder / "per_class.csv")))
        assert [int(r["n_train"]) for r in per_class] == class_counts(10, 200, 100)
        assert sum(int(r["total"]) for r in per_class) == 10000
        correct = sum(int(r["correct"]) for r in per_class)
        assert abs(100 * correct / 10000 - float(row["top1"])) < 1e-3
        assert (folder / "spec.json").exists() and (folder / "checkpoint.pt").exists()


@pytest.mark.slow
def test_rerunning_a_finished_sweep_trains_nothing(finished, capsys):
    results, _ = finished
    before = {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file()}
    assert main(SMOKE + ["--methods", "ce,focal", "--results-dir", str(results)]) == 0
    assert "2 already done, 0 to run" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_nan_loss_fails_that_run_and_the_sweep_goes_on(finished, capsys):
    results, _ = finished
    code = main(SMOKE + ["--methods", "ce,focal", "--set", "focal.lr=1e30", "--results-dir", str(results)])
    assert code == 1
    store = RunStore(results)
    failed = [store.read_result(i) for i in store.run_ids() if store.state(i) == "failed"]
    assert len(failed) == 1 and failed[0]["method"] == "focal"
    assert "loss became nan" in failed[0]["error"].lower() and failed[0]["top1"] == ""
    assert (results / failed[0]["run_id"] / "error.log").exists()
    capsys.readouterr()
    main(["status", "--results-dir", str(results)])
    out = capsys.readouterr().out
    assert "failed" in out and "2 done" in out
    main(SMOKE + ["--methods", "ce,focal", "--set", "focal.lr=1e30", "--results-dir", str(results), "--dry-run"])
    out = capsys.readouterr().out
    assert "failed (retry)" in out and out.count("done (skip)") == 1


@pytest.mark.slow
def test_corrupt_result_is_rerun(finished, capsys, tmp_path):
    results, _ = finished
    store = RunStore(results)
    ce = rows(results)["ce"]
    path = results / ce["run_id"] / "result.csv"
    path.write_text("not,a\nresult")
    main(["status", "--results-dir", str(results)])
    assert "corrupt" in capsys.readouterr().out
    assert main(SMOKE + ["--methods", "ce", "--results-dir", str(results)]) == 0
    assert store.state(ce["run_id"]) == "done"
    assert store.read_result(ce["run_id"])["top1"] == ce["top1"]  # same spec, same seed, same result


@pytest.mark.parametrize("argv, message", [
    (["--methods", "cee"], "unknown method 'cee'. Did you mean 'ce'"),
    (["--methods", "ce", "--if", "0.5"], "below 1"),
    (["--methods", "ce", "--set", "gama=2"], "unknown --set key 'gama'"),
    (["--methods", "ce", "--set", "lr"], "is not KEY=VALUE"),
    (["--methods", "ce", "--seeds", "x"], "seed 'x' is not an integer"),
    (["--methods", "ce", "--backbone", "resnet33_cifar"], "unknown backbone"),
])
def test_bad_input_exits_2_with_a_clear_message(argv, message, capsys, tmp_path):
    argv = ["run", "--dataset", "fashion_mnist_lt", "--if", "100", "--preset", "smoke", *argv]
    assert main(argv + ["--results-dir", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_missing_dataset_stops_before_training(capsys, tmp_path):
    code = main(SMOKE + ["--methods", "ce", "--results-dir", str(tmp_path / "r"), "--data-root", str(tmp_path / "empty")])
    assert code == 2
    err = capsys.readouterr().err
    assert "Fashion-MNIST not found" in err and "fetch-data" in err
    assert RunStore(tmp_path / "r").run_ids() == []


def test_unwritable_results_dir(capsys, tmp_path, fashion_mnist):
    (tmp_path / "file").write_text("")
    assert main(SMOKE + ["--methods", "ce", "--results-dir", str(tmp_path / "file" / "r")]) == 2
    assert "not writable" in capsys.readouterr().err


def test_missing_grid_arguments(capsys):
    assert main(["run", "--methods", "ce"]) == 2
    assert "--dataset, --if not given" in capsys.readouterr().err


def test_config_file_drives_the_sweep(tmp_path, capsys):
    config = tmp_path / "sweep.toml"
    config.write_text('methods = ["ce", "focal"]\ndatasets = ["fashion_mnist_lt"]\nif = [10, 100]\n'
                      'seeds = [0, 1]\npreset = "smoke"\n[set.focal]\ngamma = 2.0\n')
    assert main(["run", "--config", str(config), "--dry-run", "--results-dir", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "8 runs" in out and out.count("to run") == 8


def test_list_names_every_method_with_its_paper(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "focal" in out and "Lin et al." in out and "fashion_mnist_lt" in out
