import pytest

from ltbench.errors import UserError
from ltbench.settings import EXECUTION, SETTINGS, Setting
from ltbench.sweep import Sweep, expand, read_config, resolve


def test_paper_preset_is_the_ldam_drw_protocol():
    spec = resolve("ce", "cifar10_lt", 100, 0, "paper", {})
    assert (spec.epochs, spec.batch_size, spec.backbone, spec.preset) == (200, 128, "resnet32_cifar", "paper")
    p = spec.params
    assert (p["lr"], p["momentum"], p["weight_decay"], p["warmup_epochs"]) == (0.1, 0.9, 2e-4, 5)
    assert p["milestones"] == [0.8, 0.9] and p["lr_factors"] == [0.01, 0.0001]
    assert resolve("focal", "cifar10_lt", 100, 0, "paper", {}).hyperparameters == {
        "focal": {"gamma": 1.0, "classifier_init": "kaiming_normal"}}


def test_overrides_win_and_mark_the_spec_custom():
    spec = resolve("focal", "cifar10_lt", 100, 0, "paper", {"gamma": "2", "epochs": "30", "milestones": "0.5,0.75"})
    assert spec.own_hyperparameters["gamma"] == 2.0 and spec.epochs == 30 and spec.params["milestones"] == [0.5, 0.75]
    assert spec.preset == "custom"
    same = resolve("focal", "cifar10_lt", 100, 0, "paper", {"gamma": "1.0"})
    assert same.preset == "paper" and same.run_id == resolve("focal", "cifar10_lt", 100, 0, "paper", {}).run_id


@pytest.mark.parametrize("key, value", [("channels_last", "false"), ("compile", "reduce-overhead"),
                                        ("loader", "dataloader"), ("amp", "false"), ("cpu_amp", "true")])
def test_execution_settings_never_change_the_run_id_or_the_preset(key, value):
    assert SETTINGS[key].kind == EXECUTION
    plain = resolve("ce", "fashion_mnist_lt", 10, 0, "smoke", {})
    other = resolve("ce", "fashion_mnist_lt", 10, 0, "smoke", {key: value})
    assert other.run_id == plain.run_id and other.preset == "smoke"
    assert other.execution[key] != plain.execution[key]


def test_every_protocol_setting_changes_the_run_id():
    plain = resolve("ce", "fashion_mnist_lt", 10, 0, "smoke", {})
    changed = {"profile": "step", "backbone": "resnet20_cifar", "n_max": "100", "image_size": "28", "epochs": "3",
               "batch_size": "32", "lr": "0.2", "momentum": "0.8", "weight_decay": "0.001", "schedule": "cosine",
               "warmup_epochs": "1", "milestones": "0.5,0.7", "lr_factors": "0.1,0.01", "eval_every": "1",
               "crop_padding": "2", "flip": "false", "train_color_jitter": "0.4", "val_per_class": "10"}
    assert set(changed) == {k for k, s in SETTINGS.items() if s.kind != EXECUTION}
    for key, value in changed.items():
        other = resolve("ce", "fashion_mnist_lt", 10, 0, "smoke", {key: value})
        assert other.run_id != plain.run_id and other.preset == "custom", key


def test_run_id_is_stable_and_differs_by_seed():
    a = resolve("ce", "fashion_mnist_lt", 10, 0, "smoke", {})
    assert a.run_id == resolve("ce", "fashion_mnist_lt", 10, 0, "smoke", {}).run_id
    assert a.run_id != resolve("ce", "fashion_mnist_lt", 10, 1, "smoke", {}).run_id
    assert len(a.run_id) == 12


def test_method_scoped_override_applies_to_that_method_only():
    specs = expand(Sweep(["ce", "focal"], ["fashion_mnist_lt"], [100], overrides={"focal.lr": "0.05"}))
    lrs = {s.method: s.params["lr"] for s in specs}
    assert lrs == {"ce": 0.1, "focal": 0.05}


def test_grid_expansion():
    specs = expand(Sweep(["ce", "focal"], ["fashion_mnist_lt", "cifar10_lt"], ["10", "100"], seeds=[0, 1], preset="quick"))
    assert len(specs) == 16 and len({s.run_id for s in specs}) == 16


def test_a_key_is_routed_to_the_one_method_that_has_it():
    specs = expand(Sweep(["ce", "focal"], ["cifar10_lt"], [100], overrides={"gamma": "2"}))
    assert {s.method: s.hyperparameters for s in specs} == {
        "ce": {"ce": {"classifier_init": "kaiming_normal"}},
        "focal": {"focal": {"gamma": 2.0, "classifier_init": "kaiming_normal"}}}


def test_an_ambiguous_key_names_its_candidates_and_a_scoped_one_is_not_ambiguous():
    with pytest.raises(UserError, match=r"--set gamma is ambiguous: cb_focal.gamma, focal.gamma") as info:
        expand(Sweep(["focal", "cb_focal"], ["cifar10_lt"], [100], overrides={"gamma": "2"}))
    assert "--set cb_focal.gamma=2" in str(info.value)
    specs = expand(Sweep(["focal", "cb_focal"], ["cifar10_lt"], [100], overrides={"cb_focal.gamma": "2"}))
    assert {s.method: s.own_hyperparameters["gamma"] for s in specs} == {"focal": 1.0, "cb_focal": 2.0}


def test_two_plugins_with_one_key_name_do_not_collide():
    # sc_hybrid's and psc_hybrid's temperatures are separate settings in separate namespaces
    specs = expand(Sweep(["sc_hybrid", "psc_hybrid"], ["cifar100_lt"], [100],
                         overrides={"psc_hybrid.temperature": "0.5"}))
    temps = {s.method: s.own_hyperparameters["temperature"] for s in specs}
    assert temps == {"sc_hybrid": 0.1, "psc_hybrid": 0.5}
    assert all(set(s.hyperparameters) == {s.method} for s in specs)


def test_a_stage_1_hyperparameter_is_set_by_its_method_name_from_the_two_stage_method():
    # gcl's stage 1 and stage 2 both mix; naming the stage-1 method reaches only its setting
    [spec] = expand(Sweep(["gcl"], ["cifar10_lt"], [100], overrides={"gcl_stage1.batch_mix": "none"}))
    assert spec.hyperparameters["gcl_stage1"]["batch_mix"] == "none"
    assert spec.own_hyperparameters["gcl_batch_mix"] == "mixup"
    [default] = expand(Sweep(["gcl"], ["cifar10_lt"], [100]))
    assert default.hyperparameters["gcl_stage1"]["batch_mix"] == "mixup"


@pytest.mark.parametrize("sweep, message", [
    (Sweep(["cee"], ["cifar10_lt"], [100]), "unknown method 'cee'. Did you mean 'ce'"),
    (Sweep(["ce"], ["cifar10"], [100]), "unknown dataset 'cifar10'. Did you mean 'cifar10_lt'"),
    (Sweep(["ce"], ["cifar10_lt"], ["0.5"]), "below 1"),
    (Sweep(["ce"], ["cifar10_lt"], ["ten"]), "not a number"),
    (Sweep(["ce"], ["cifar10_lt"], [100], preset="fast"), "unknown preset 'fast'"),
])
def test_bad_grid_is_explained(sweep, message):
    with pytest.raises(UserError, match=message):
        expand(sweep)


# --set KEY=VALUE on a sweep of ce, or of the method before the colon, and the error it gives
BAD_SETTINGS = """
gama=2                  | unknown --set key 'gama'
gamma=2                 | ce has no setting gamma; it is focal.gamma, cb_focal.gamma
focal.gamma=2           | method 'focal' is not in this sweep, nor a stage 1 of one
crt: ce.lr=0.1          | --set key for ce 'lr'
lr=fast                 | lr=fast: expected a float
backbone=resnet33       | unknown backbone
schedule=linear         | schedule=linear is not allowed
epochs=0                | epochs=0 is out of range: it must be >= 1
compile=fastest         | compile=fastest is not allowed
loader=pil              | loader=pil is not allowed
epochs=inf              | epochs=inf: expected an int
eval_every=1e400        | eval_every=1e400: expected an int
lr=nan                  | lr=nan: must be a finite number
lr=-5                   | lr=-5.0 is out of range: it must be > 0
momentum=inf            | momentum=inf: must be a finite number
weight_decay=-1         | weight_decay=-1.0 is out of range
milestones=0.5          | milestones and lr_factors
focal: gamma=-1         | focal.gamma=-1.0 is out of range
crt: crt.gamma=2        | crt has no setting gamma; it is focal.gamma
crt: crt.gama=2         | unknown --set key for crt 'gama'
warmup_epochs=500       | warmup_epochs=500 with epochs=200: the warm-up must end before the last epoch
epochs=5                | warmup_epochs=5 with epochs=5
milestones=0.9,0.5      | milestones=0.9,0.5: milestones must increase
milestones=0.5,0.5      | milestones must increase
ldam_drw: drw_start=1   | ldam_drw.drw_start=1.0 with epochs=200: re-weighting would start after the last epoch
ce_drw: epochs=2        | warmup_epochs=5 with epochs=2
"""


@pytest.mark.parametrize("line", [line for line in BAD_SETTINGS.strip().splitlines()])
def test_bad_setting_is_explained(line):
    setting, message = (part.strip() for part in line.split("|"))
    method, _, setting = setting.rpartition(": ")
    key, _, value = setting.partition("=")
    with pytest.raises(UserError, match=message):
        expand(Sweep([method or "ce"], ["cifar10_lt"], [100], overrides={key: value}))


def test_settings_together_are_checked_where_the_sweep_changes_one():
    """A relation between settings holds for what the user sets; a preset's own values are
    the preset's (smoke's two epochs end before a DRW start at 80 %)."""
    assert expand(Sweep(["ldam_drw"], ["cifar10_lt"], [100], preset="smoke"))
    with pytest.raises(UserError, match="ldam_drw.drw_start=0.9 with epochs=2") as info:
        expand(Sweep(["ldam_drw"], ["cifar10_lt"], [100], preset="smoke", overrides={"drw_start": "0.9"}))
    assert info.value.hint == "--set ldam_drw.drw_start=0.5 or lower (at most, re-weighting the last epoch), or more --epochs"
    (spec,) = expand(Sweep(["ldam_drw"], ["cifar10_lt"], [100], preset="smoke", overrides={"drw_start": "0.5"}))
    assert spec.own_hyperparameters["drw_start"] == 0.5


def test_setting_coercion():
    assert SETTINGS["amp"].coerce("amp", "false") is False
    assert SETTINGS["epochs"].coerce("epochs", "20") == 20 and SETTINGS["epochs"].coerce("epochs", "1e3") == 1000
    assert SETTINGS["milestones"].coerce("milestones", [0.5, 1]) == [0.5, 1.0]
    # compile is on/off or a torch.compile mode
    assert SETTINGS["compile"].coerce("compile", "true") is True
    assert SETTINGS["compile"].coerce("compile", "reduce-overhead") == "reduce-overhead"
    assert SETTINGS["n_max"].coerce("n_max", "none") is None
    for bad in ("2.5", "inf", "nan", "true"):
        with pytest.raises(UserError):
            SETTINGS["epochs"].coerce("epochs", bad)
    with pytest.raises(ValueError):
        Setting(1, kind="speed")


def test_config_file(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('methods = ["ce", "focal"]\ndataset = "fashion_mnist_lt"\nif = [100]\n'
                    'preset = "smoke"\n[set]\nlr = 0.05\n[set.focal]\ngamma = 2.0\n')
    config = read_config(path)
    assert config["set"] == {"lr": 0.05, "focal.gamma": 2.0}
    assert config["dataset"] == ["fashion_mnist_lt"]
    (tmp_path / "comma.toml").write_text('methods = "ce,focal"\nseeds = "0,1"\n')
    assert read_config(tmp_path / "comma.toml")["methods"] == ["ce", "focal"]
    for name, text, message in [("bad", 'methodz = ["ce"]\n', "unknown config key"),
                                ("broken", "methods = [\n", "not valid TOML"),
                                ("set", 'set = "lr=0.1"\n', "`set` must be a table"),
                                ("data", 'data = 3\n', "`data` must be a table"),
                                ("seeds", "seeds = {a = 1}\n", "`seeds` must be a list"),
                                ("if", "if = true\n", "`if` must be a list")]:
        (tmp_path / f"{name}.toml").write_text(text)
        with pytest.raises(UserError, match=message):
            read_config(tmp_path / f"{name}.toml")
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(UserError, match="not a text file"):
        read_config(tmp_path / "binary.toml")
    with pytest.raises(UserError, match="is a directory"):
        read_config(tmp_path)


def test_a_sweep_runs_every_cell_of_a_seed_before_the_next_seed():
    specs = expand(Sweep(["ce", "focal"], ["fashion_mnist_lt", "cifar10_lt"], ["10", "100"], seeds=[0, 1],
                         preset="smoke"))
    order = [(s.seed, s.dataset, s.imbalance_factor, s.method) for s in specs]
    assert order == sorted(order, key=lambda o: (o[0], ["fashion_mnist_lt", "cifar10_lt"].index(o[1]),
                                                 [10.0, 100.0].index(o[2]), ["ce", "focal"].index(o[3])))
    assert [o[3] for o in order[:2]] == ["ce", "focal"] and {o[0] for o in order[:8]} == {0}


def test_a_setting_several_methods_share_is_one_setting():
    # ce_drw and ldam_drw declare the same deferred re-weighting settings (methods/common.py)
    specs = expand(Sweep(["ce_drw", "ldam_drw"], ["cifar10_lt"], [100], overrides={"drw_start": "0.5"}))
    assert {s.method: s.own_hyperparameters["drw_start"] for s in specs} == {"ce_drw": 0.5, "ldam_drw": 0.5}
