"""The settings schema at the command line: one listing of every setting, run ids that name
the experiment whatever the execution settings, and results of ltbench 0.1 read as today's."""

import json
import shutil
from pathlib import Path

import pytest

from ltbench import registry
from ltbench.cli import main
from ltbench.settings import EXECUTION, SETTINGS
from ltbench.store import RunStore

FIXTURE = Path(__file__).parent / "fixtures" / "results_v0_1"  # written by ltbench 0.1 (commit 307efe7)
DRY = ["run", "--dataset", "fashion_mnist_lt", "--if", "10", "--preset", "smoke", "--dry-run"]
EXECUTION_VALUES = {"amp": "false", "cpu_amp": "true", "channels_last": "false", "compile": "reduce-overhead",
                    "loader": "dataloader", "save_predictions": "true", "log_tensorboard": "true"}


def show_spec(capsys, *extra, method="ce") -> list[dict]:
    assert main(DRY + ["--methods", method, "--show-spec", *extra]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_execution_settings_keep_the_run_id_and_the_preset(capsys):
    assert set(EXECUTION_VALUES) == {k for k, s in SETTINGS.items() if s.kind == EXECUTION}
    (plain,) = show_spec(capsys)
    assert plain["preset"] == "smoke"
    for key, value in EXECUTION_VALUES.items():
        (other,) = show_spec(capsys, "--set", f"{key}={value}")
        assert (other["run_id"], other["preset"]) == (plain["run_id"], "smoke"), key
        assert other["execution"][key] != plain["execution"][key]
    assert main(DRY + ["--methods", "ce", "--set", "channels_last=false"]) == 0
    assert plain["run_id"] in capsys.readouterr().out


def test_show_spec_has_every_resolved_setting(capsys):
    (spec,) = show_spec(capsys, method="focal")
    flat = {**{k: spec[k] for k in ("profile", "backbone", "epochs", "batch_size", "n_max")}, **spec["params"],
            **spec["execution"]}
    assert set(flat) == set(SETTINGS)
    assert spec["hyperparameters"] == {"focal": {"gamma": 1.0, "classifier_init": "kaiming_normal"}}


def test_list_settings_prints_every_setting_with_kind_type_default_and_help(capsys):
    assert main(["list", "--settings"]) == 0
    out = capsys.readouterr().out
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    for name, setting in SETTINGS.items():
        assert name in lines, name
        assert setting.kind in lines[name] and setting.type_name().split()[0] in lines[name]
    for method, cls in registry.methods().items():
        for key in cls.hyperparameters:
            assert f"{method}.{key}" in out
    # a help line is shown as written, brackets and all (rich would take them for markup)
    assert "ltbench[tensorboard]" in "".join(part.strip() for part in out.replace("│", "").split())


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("ltbench 0.")


def test_results_of_the_previous_version_are_found_and_migrated(tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(FIXTURE, results)
    # 0.1 ran with nn.Linear's own classifier init and cRT's stage 2 with BatchNorm in eval mode
    # and the schedule stepped after each epoch: its runs record that, so a sweep that asks for
    # those values finds them (labelled custom: today's paper protocol differs)
    earlier = ["--set", "ce.classifier_init=default", "--set", "crt.classifier_init=default",
               "--set", "focal.classifier_init=default", "--set", "crt.crt_bn_train=false",
               "--set", "crt.crt_lr_step_first=false"]
    sweep = ["run", "--methods", "ce,crt,focal", "--dataset", "fashion_mnist_lt", "--if", "10", "--preset", "smoke",
             "--results-dir", str(results), *earlier]
    # a dry run finds them where they are and writes nothing
    before = sorted(p.name for p in results.iterdir())
    assert main(sweep + ["--dry-run", "--set", "channels_last=false"]) == 0
    assert capsys.readouterr().out.count("done (skip)") == 3
    assert sorted(p.name for p in results.iterdir()) == before
    # status migrates: the two focal runs (channels_last on and off) are one experiment
    assert main(["status", "--results-dir", str(results)]) == 0
    out = capsys.readouterr().out
    assert "3 done" in out and "the same experiment as" in out
    store = RunStore(results)
    assert len(store.run_ids()) == 3 and len(list((results / ".superseded").iterdir())) == 1
    rows = {store.read_result(i)["method"]: store.read_result(i) for i in store.run_ids()}
    assert {m: r["preset"] for m, r in rows.items()} == {"ce": "custom", "crt": "custom", "focal": "custom"}
    assert rows["crt"]["stage1_run_id"] == rows["ce"]["run_id"]
    assert rows["ce"]["top1"] == "10.75" and rows["focal"]["top1"] in ("11.99", "12.02")
    # and a run of today's version trains nothing
    assert main(sweep) == 0
    assert "3 already done, 0 to run" in capsys.readouterr().out
    assert main(["report", "--results-dir", str(results), "--out", str(tmp_path / "reports")]) == 0
