"""`ltbench show RUN_ID` and the experiment tag (`ltbench run --tag`, `ltbench report --tag`)."""

import csv

import pytest

from ltbench.cli import build_parser, main
from ltbench.errors import UserError
from ltbench.runner import result_row
from ltbench.store import RunStore
from ltbench.sweep import resolve
from ltbench.sweep_args import sweep_from_args
from ltbench.tag import check_tag

SMOKE = ["run", "--dataset", "fashion_mnist_lt", "--if", "10", "--preset", "smoke", "--n-max", "40",
         "--epochs", "2"]


@pytest.fixture(scope="module")
def tagged(tmp_path_factory, fashion_mnist):
    """ce under tag first-sweep, then ce and focal under second-sweep: ce is reused."""
    results = tmp_path_factory.mktemp("results")
    codes = [main(SMOKE + ["--methods", "ce", "--tag", "first-sweep", "--results-dir", str(results)]),
             main(SMOKE + ["--methods", "ce,focal", "--tag", " second sweep ", "--results-dir", str(results)])]
    store = RunStore(results)
    rows = {row["method"]: row for row in (store.read_result(i) for i in store.run_ids())}
    return results, codes, rows


# ---------------------------------------------------------------------------- the tag

@pytest.mark.slow
def test_a_tag_is_recorded_and_a_reused_run_keeps_its_own(tagged):
    _, codes, rows = tagged
    assert codes == [0, 0]
    assert rows["ce"]["tag"] == "first-sweep"  # done before: reused, its row untouched
    assert rows["focal"]["tag"] == "second sweep"


@pytest.mark.slow
def test_a_sweep_without_a_tag_does_not_take_the_one_before(tagged, tmp_path):
    """`tagged` ran two tagged sweeps in this process; an untagged one after them stays untagged."""
    assert main(SMOKE + ["--methods", "ce", "--seeds", "1", "--results-dir", str(tmp_path)]) == 0
    store = RunStore(tmp_path)
    assert [store.read_result(run_id)["tag"] for run_id in store.run_ids()] == [""]


@pytest.mark.slow
def test_report_keeps_the_rows_of_one_tag(tagged, tmp_path, capsys):
    results, _, rows = tagged
    assert main(["report", "--results-dir", str(results), "--out", str(tmp_path / "out"),
                 "--tag", "second sweep", "--baseline", "none"]) == 0
    out = capsys.readouterr().out
    assert "1 finished run" in out and "tag second sweep" in out
    assert main(["report", "--results-dir", str(results), "--out", str(tmp_path / "none"), "--tag", "third"]) == 2
    assert "tags present: first-sweep, second sweep" in capsys.readouterr().err


@pytest.mark.parametrize("value, message", [
    ("", "the tag is empty"), ("   ", "the tag is empty"), ("a,b", "holds a comma"),
    ("two\nlines", "unprintable"), ("tab\there", "unprintable"), ("x" * 101, "101 characters long"),
    (3, "is not text"),
])
def test_bad_tags_are_refused_with_what_is_allowed(value, message):
    with pytest.raises(UserError, match=message) as info:
        check_tag(value)
    assert "printable characters without commas" in info.value.hint


def test_good_tags_are_kept_as_given():
    assert check_tag("  ablation: lr 0.05 [v2]  ") == "ablation: lr 0.05 [v2]"


def test_the_tag_comes_from_the_config_file_and_the_flag_wins(tmp_path, capsys):
    config = tmp_path / "sweep.toml"
    config.write_text('methods = ["ce"]\ndataset = "fashion_mnist_lt"\nif = [10]\ntag = "from-config"\n')
    parse = build_parser().parse_args
    assert sweep_from_args(parse(["run", "--config", str(config)]))[1]["context"].tag == "from-config"
    assert sweep_from_args(parse(["run", "--config", str(config), "--tag", "flag"]))[1]["context"].tag == "flag"
    config.write_text('methods = ["ce"]\ndataset = "fashion_mnist_lt"\nif = [10]\ntag = 7\n')
    assert main(["run", "--config", str(config), "--dry-run"]) == 2
    assert "the tag 7 is not text (int)" in capsys.readouterr().err
    assert main(["run", "--methods", "ce", "--dataset", "fashion_mnist_lt", "--if", "10", "--tag", "a,b",
                 "--dry-run"]) == 2
    assert "holds a comma" in capsys.readouterr().err


# ---------------------------------------------------------------------------- ltbench show

@pytest.mark.slow
def test_show_prints_spec_provenance_result_and_history(tagged, capsys):
    results, _, rows = tagged
    row = rows["focal"]
    assert main(["show", row["run_id"][:5], "--results-dir", str(results)]) == 0
    out = capsys.readouterr().out
    for text in (f"Run {row['run_id']}", "focal fashion_mnist_lt IF10 seed0", "Spec", "Provenance", "Result",
                 row["split_fingerprint"], row["ltbench_version"], row["torch"], "second sweep",
                 "channels_last=true", "top-1 %", row["top1"], "focal.gamma",
                 "2 epoch(s) in history.csv, epoch 1 to 2", "loss: ", "lr: ", "at 1 evaluated epoch(s)"):
        assert text in out, text


def fake_run(store: RunStore, seed: int = 0, **values):
    spec = resolve("psc_hybrid", "fashion_mnist_lt", 10, seed, "smoke")
    store.write_spec(spec)
    if values:
        store.write_result(result_row(spec, status="done", started="2026-01-01T00:00:00", **values))
    return spec


def write_history(path, rows):
    columns = ["epoch", "lr", "loss", "loss_feature", "loss_classifier", "alpha", "images_per_s", "wall_s",
               "top1", "many", "medium", "few"]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        writer.writerows(rows)


def test_show_summarises_a_hybrid_history_and_thins_many_evaluations(tmp_path, capsys):
    store = RunStore(tmp_path)
    spec = fake_run(store, top1=61.5, many=80.0, medium=60.0, few="", top1_best=63.0, top1_best_epoch=30,
                    n_many=2, n_medium=8, n_few=0, tag="[bold]odd[/bold]")
    rows = [{"epoch": e, "lr": 0.1 * (1 - e / 40), "loss": 3 - e / 20, "loss_feature": 2 - e / 40,
             "loss_classifier": 1 - e / 80, "alpha": 1 - (e - 1) / 39, "images_per_s": 1000, "wall_s": e * 2.0,
             "top1": 30 + e if e % 2 == 0 else "", "many": 50, "medium": 40, "few": ""} for e in range(1, 41)]
    rows[29]["top1"] = 99.0  # the best evaluation, at epoch 30, is listed even when thinned
    write_history(store.run_dir(spec.run_id) / "history.csv", rows)
    assert main(["show", spec.run_id, "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "40 epoch(s) in history.csv, epoch 1 to 40" in out
    assert "alpha: 1 at epoch 1, 0 at epoch 40 (range 0 to 1)" in out
    assert "loss: 2.95 at epoch 1, 1 at epoch 40 (lowest 1 at epoch 40)" in out
    assert "loss_feature: 1.975 at epoch 1, 1 at epoch 40" in out
    assert "loss_classifier:" in out and "lr: 0.0975 at the first epoch, 0 at the last" in out
    assert "20 evaluated epoch(s), 12 shown" in out or "20 evaluated epoch(s), 13 shown" in out
    assert "epoch 30: 99.00 (50.00 / 40.00 / —)  (best)" in out and "epoch 40: 70.00" in out
    assert "— (no class in the group)" in out
    assert "[bold]odd[/bold]" in out  # text from the files is shown as it is, never as markup
    assert "80.00 (2 classes)" in out and "63.00 at epoch 30" in out  # as status rounds it


def test_show_without_history_or_result(tmp_path, capsys):
    store = RunStore(tmp_path)
    spec = fake_run(store)
    assert main(["show", spec.run_id, "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "No result yet" in out and "no history.csv" in out and "(partial)" in out


def test_show_refuses_unknown_empty_and_ambiguous_ids(tmp_path, capsys):
    store = RunStore(tmp_path)
    ids = [fake_run(store, seed).run_id for seed in range(17)]  # 17 ids: two share a first digit
    first = next(run_id[0] for run_id in ids if sum(other[0] == run_id[0] for other in ids) > 1)
    assert main(["show", first, "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "runs in" in err and f"have ids starting with '{first}'" in err and "give more characters" in err
    assert main(["show", "zz", "--results-dir", str(tmp_path)]) == 2
    assert "no run in" in capsys.readouterr().err
    assert main(["show", " ", "--results-dir", str(tmp_path)]) == 2
    assert "the run id is empty" in capsys.readouterr().err
    assert main(["show", "ab", "--results-dir", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
