"""`ltbench tune`: equal-budget studies whose trials are runs in the store, resumed without
training anything twice, seeded, retrained on seeds, and reported against the defaults."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from ltbench.cli import main
from ltbench.errors import UserError
from ltbench.runner import execute
from ltbench.run_context import RunContext
from ltbench.search_space import distributions
from ltbench.store import RunStore
from ltbench.sweep import Sweep, resolve
from ltbench.tune import DEFAULT_TAG, TRIAL_SEED, TRIAL_TAG, TUNED_TAG, cells_of, check_space
from ltbench import tune_study

SMOKE = ["--dataset", "fashion_mnist_lt", "--if", "10", "--preset", "smoke", "--n-max", "30", "--device", "cpu"]


def tune(results, *flags) -> int:
    return main(["tune", *SMOKE, "--results-dir", str(results), *flags])


def rows(results) -> dict[str, dict]:
    store = RunStore(results)
    return {run_id: store.read_result(run_id) for run_id in store.run_ids()}


def summaries(results) -> dict[str, dict]:
    """method -> its study's summary file."""
    found = {}
    for path in (results / "tune").glob("*.json"):
        summary = json.loads(path.read_text())
        found[summary["method"]] = summary
    return found


def same_settings(row: dict, drawn: dict) -> bool:
    """A result row's params (a method's own settings by their bare name) hold the drawn values."""
    params = json.loads(row["params"])
    return all(params[name.rpartition(".")[2]] == pytest.approx(value) for name, value in drawn.items())


def result_mtimes(results) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in results.glob("*/result.csv")}


@pytest.fixture(scope="module")
def study(tmp_path_factory, fashion_mnist):
    """ce and focal, budget 3, the best settings and the defaults retrained on seeds 0 and 1."""
    results = tmp_path_factory.mktemp("tune")
    code = tune(results, "--methods", "ce,focal", "--budget", "3", "--seeds", "0,1")
    return results, code


@pytest.mark.slow
def test_each_trial_is_a_done_run_in_the_store_and_the_study_is_a_journal(study):
    results, code = study
    assert code == 0
    assert (results / "tune" / tune_study.JOURNAL).stat().st_size > 0
    found, every = summaries(results), rows(results)
    assert set(found) == {"ce", "focal"}
    for method, summary in found.items():
        trials = summary["trials"]
        assert [t["number"] for t in trials] == [0, 1, 2] and {t["state"] for t in trials} == {"COMPLETE"}
        assert len({t["run_id"] for t in trials}) == 3
        for trial in trials:
            row = every[trial["run_id"]]
            assert (row["status"], row["method"], row["tag"], row["preset"]) == ("done", method, TRIAL_TAG, "custom")
            assert int(row["seed"]) == TRIAL_SEED
            assert trial["value"] == pytest.approx(float(row["val_top1"]))  # scored on validation
            assert same_settings(row, trial["params"])
        assert set(trials[0]["params"]) == ({"lr", "weight_decay"} | ({"focal.gamma"} if method == "focal" else set()))


@pytest.mark.slow
def test_the_best_settings_and_the_defaults_are_retrained_on_the_seeds(study):
    results, _ = study
    every = rows(results)
    for method, summary in summaries(results).items():
        best = max((t for t in summary["trials"]), key=lambda t: t["value"])
        assert summary["best"]["number"] == best["number"]
        assert set(summary["tuned"]) == set(summary["defaults"]) == {"0", "1"}
        for seed, run_id in summary["tuned"].items():
            row = every[run_id]
            assert (row["status"], row["tag"], row["preset"], row["seed"]) == ("done", TUNED_TAG, "custom", seed)
            assert same_settings(row, best["params"])
        for seed, run_id in summary["defaults"].items():
            row = every[run_id]
            assert (row["status"], row["tag"]) == ("done", DEFAULT_TAG)
            # the command's own settings and nothing drawn
            assert run_id == resolve(method, "fashion_mnist_lt", 10, int(seed), "smoke", {"n_max": "30"}).run_id
    assert len(every) == 2 * (3 + 2 + 2)


@pytest.mark.slow
def test_a_rerun_with_the_same_budget_trains_nothing(study, capsys):
    results, _ = study
    before = result_mtimes(results)
    assert tune(results, "--methods", "ce,focal", "--budget", "3", "--seeds", "0,1") == 0
    assert result_mtimes(results) == before
    out = capsys.readouterr().out
    assert "round" not in out and "0 to train" in out


@pytest.mark.slow
def test_a_larger_budget_adds_exactly_the_difference(study, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(study[0], results)
    before = result_mtimes(results)
    assert tune(results, "--methods", "ce,focal", "--budget", "4", "--seeds", "0,1") == 0
    after = rows(results)
    trials = [run_id for run_id, row in after.items() if row["tag"] == TRIAL_TAG]
    assert len(trials) == 2 * 4
    assert all(result_mtimes(results)[run_id] == mtime for run_id, mtime in before.items())
    assert all(len(s["trials"]) == 4 for s in summaries(results).values())


@pytest.mark.slow
def test_the_same_sampler_seed_draws_the_same_settings_alone_or_beside_another_method(study, tmp_path):
    """ce's study alone, to a budget of 2, draws what it drew as the first 2 of 3 beside focal."""
    assert tune(tmp_path, "--methods", "ce", "--budget", "2", "--seeds", "0") == 0
    alone = summaries(tmp_path)["ce"]["trials"]
    beside = summaries(study[0])["ce"]["trials"][:2]
    assert [t["params"] for t in alone] == [t["params"] for t in beside]
    assert [t["run_id"] for t in alone] == [t["run_id"] for t in beside]


@pytest.mark.slow
def test_another_sampler_seed_draws_other_settings(tmp_path, fashion_mnist, capsys):
    assert tune(tmp_path, "--methods", "ce", "--budget", "1", "--seeds", "0", "--sampler", "random",
                "--sampler-seed", "7") == 0
    first = summaries(tmp_path)["ce"]["trials"][0]["params"]
    other = tmp_path / "other"
    assert tune(other, "--methods", "ce", "--budget", "1", "--seeds", "0", "--sampler", "random",
                "--sampler-seed", "8") == 0
    assert summaries(other)["ce"]["trials"][0]["params"] != first
    # the study was started with seed 7: continuing it with another is refused, nothing trained
    before = result_mtimes(tmp_path)
    capsys.readouterr()
    assert tune(tmp_path, "--methods", "ce", "--budget", "2", "--seeds", "0", "--sampler", "random",
                "--sampler-seed", "8") == 2
    assert "--sampler-seed 7" in capsys.readouterr().err
    assert result_mtimes(tmp_path) == before


@pytest.mark.slow
def test_a_trial_left_running_is_finished_from_the_store_not_retrained(tmp_path, fashion_mnist):
    """As Ctrl-C leaves a study between a trial's run ending and its score being told."""
    assert tune(tmp_path, "--methods", "ce", "--budget", "1", "--seeds", "0") == 0
    cell = cells_of(Sweep(["ce"], ["fashion_mnist_lt"], [10.0], preset="smoke", overrides={"n_max": "30"}),
                    TRIAL_SEED)[0]
    storage = tune_study.journal(tmp_path)
    left = tune_study.study_for_round(storage, cell.name, "tpe", 0).ask(distributions(cell.space))
    spec = cell.spec(TRIAL_SEED, left.params)
    left.set_user_attr("run_id", spec.run_id)
    assert execute(spec, tmp_path, "cpu", context=RunContext(tag=TRIAL_TAG), log=lambda *_: None) == "done"
    trained = result_mtimes(tmp_path)[spec.run_id]
    assert tune(tmp_path, "--methods", "ce", "--budget", "2", "--seeds", "0") == 0
    trials = summaries(tmp_path)["ce"]["trials"]
    assert [(t["number"], t["state"]) for t in trials] == [(0, "COMPLETE"), (1, "COMPLETE")]
    assert trials[1]["run_id"] == spec.run_id
    assert result_mtimes(tmp_path)[spec.run_id] == trained


@pytest.mark.slow
def test_with_jobs_a_round_asks_its_trials_up_front_and_trains_them_at_once(tmp_path, fashion_mnist, capsys):
    assert tune(tmp_path, "--methods", "ce,focal", "--budget", "2", "--seeds", "0", "--jobs", "2") == 0
    out = capsys.readouterr().out
    # two studies share the two jobs: a trial of each per round, two rounds
    assert "2 jobs at once" in out and "round 2: 2 trial(s)" in out and "round 3" not in out
    every = rows(tmp_path)
    for summary in summaries(tmp_path).values():
        assert [t["state"] for t in summary["trials"]] == ["COMPLETE", "COMPLETE"]
        assert all(every[t["run_id"]]["tag"] == TRIAL_TAG for t in summary["trials"])
        assert every[summary["tuned"]["0"]]["tag"] == TUNED_TAG


@pytest.mark.slow
def test_the_report_sets_defaults_against_tuned_and_draws_each_history(study, tmp_path, capsys):
    results, _ = study
    out = tmp_path / "report"
    assert main(["report", "--results-dir", str(results), "--out", str(out)]) == 0
    table = (out / "tables" / "tuning.md").read_text()
    assert "Paper defaults vs tuned (equal budget 3)" in table
    lines = [line for line in table.splitlines() if line.startswith("| CE |") or line.startswith("| Focal |")]
    assert len(lines) == 2 and all("| 3/3 |" in line and "(n=2)" in line for line in lines)
    data = (out / "tables" / "tuning.csv").read_text()
    assert "defaults_mean" in data and "p_value" in data
    assert {p.name for p in (out / "figures").glob("tuning_history_*.png")} == {
        "tuning_history_ce.png", "tuning_history_focal.png"}
    assert "Tuning at equal budget" in (out / "report.md").read_text()
    capsys.readouterr()
    # the tags keep the trials, the tuned runs and the defaults apart
    assert main(["report", "--results-dir", str(results), "--out", str(tmp_path / "trials"),
                 "--tag", TRIAL_TAG, "--baseline", "none"]) == 0
    assert "6 finished runs" in capsys.readouterr().out


@pytest.mark.slow
def test_the_report_on_a_study_imports_no_torch(study, tmp_path):
    from test_report import TORCH_BLOCKED

    code = TORCH_BLOCKED + (
        "import argparse; import ltbench.report.cli as cli\n"
        "parser = argparse.ArgumentParser(); cli.add_arguments(parser)\n"
        f"args = parser.parse_args(['--results-dir', {str(study[0])!r}, '--out', {str(tmp_path)!r}])\n"
        "assert cli.run(args) == 0\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "figures" / "tuning_history_ce.png").is_file()


# ---------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("flags, message", [
    (["--budget", "0"], "--budget '0' is not a whole number of at least 1"),
    (["--budget", "many"], "--budget 'many' is not a whole number"),
    (["--budget", "2", "--sampler", "grid"], "unknown sampler 'grid'"),
    (["--budget", "2", "--sampler-seed", "-1"], "--sampler-seed"),
    (["--budget", "2", "--seeds", "0,1000"], "includes the trial seed 1000"),
    (["--budget", "2", "--jobs", "2", "--launcher", "slurm"], "--jobs and --devices are options of the local"),
    (["--budget", "2", "--methods", "nosuch"], "nosuch"),
])
def test_bad_input_is_refused_before_anything_is_written(flags, message, tmp_path, capsys):
    base = ["--methods", "ce"] if "--methods" not in flags else []
    assert tune(tmp_path / "results", *base, *flags) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_a_method_without_a_search_space_is_refused():
    with pytest.raises(UserError, match="declares no search space"):
        check_space("plugin_method", [])
