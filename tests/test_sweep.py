import pytest

from ltbench.errors import UserError
from ltbench.sweep import Sweep, coerce, expand, read_config, resolve


def test_paper_preset_is_the_ldam_drw_protocol():
    spec = resolve("ce", "cifar10_lt", 100, 0, "paper", {})
    assert (spec.epochs, spec.batch_size, spec.backbone, spec.preset) == (200, 128, "resnet32_cifar", "paper")
    p = spec.params
    assert (p["lr"], p["momentum"], p["weight_decay"], p["warmup_epochs"]) == (0.1, 0.9, 2e-4, 5)
    assert p["milestones"] == [0.8, 0.9] and p["lr_factors"] == [0.01, 0.0001]
    assert resolve("focal", "cifar10_lt", 100, 0, "paper", {}).params["gamma"] == 1.0


def test_overrides_win_and_mark_the_spec_custom():
    spec = resolve("focal", "cifar10_lt", 100, 0, "paper", {"gamma": "2", "epochs": "30", "milestones": "0.5,0.75"})
    assert spec.params["gamma"] == 2.0 and spec.epochs == 30 and spec.params["milestones"] == [0.5, 0.75]
    assert spec.preset == "custom"
    same = resolve("focal", "cifar10_lt", 100, 0, "paper", {"gamma": "1.0"})
    assert same.preset == "paper" and same.run_id == resolve("focal", "cifar10_lt", 100, 0, "paper", {}).run_id


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


@pytest.mark.parametrize("sweep, message", [
    (Sweep(["cee"], ["cifar10_lt"], [100]), "unknown method 'cee'. Did you mean 'ce'"),
    (Sweep(["ce"], ["cifar10"], [100]), "unknown dataset 'cifar10'. Did you mean 'cifar10_lt'"),
    (Sweep(["ce"], ["cifar10_lt"], ["0.5"]), "below 1"),
    (Sweep(["ce"], ["cifar10_lt"], ["ten"]), "not a number"),
    (Sweep(["ce"], ["cifar10_lt"], [100], overrides={"gama": "2"}), "unknown --set key 'gama'"),
    (Sweep(["ce"], ["cifar10_lt"], [100], overrides={"gamma": "2"}), "unknown --set key 'gamma'"),
    (Sweep(["ce"], ["cifar10_lt"], [100], overrides={"focal.gamma": "2"}), "method 'focal' is not in this sweep"),
    (Sweep(["ce"], ["cifar10_lt"], [100], overrides={"lr": "fast"}), "expected a float"),
    (Sweep(["ce"], ["cifar10_lt"], [100], overrides={"backbone": "resnet33"}), "unknown backbone"),
    (Sweep(["ce"], ["cifar10_lt"], [100], overrides={"schedule": "linear"}), "schedule 'linear'"),
    (Sweep(["ce"], ["cifar10_lt"], [100], overrides={"epochs": "0"}), "epochs must be at least 1"),
    (Sweep(["ce"], ["cifar10_lt"], [100], preset="fast"), "unknown preset 'fast'"),
    (Sweep(["ce"], ["cifar10_lt"], [100], overrides={"compile": "fastest"}), "compile 'fastest' is not allowed"),
    (Sweep(["ce"], ["cifar10_lt"], [100], overrides={"loader": "pil"}), "loader 'pil' is not allowed"),
])
def test_bad_input_is_explained(sweep, message):
    with pytest.raises(UserError, match=message):
        expand(sweep)


def test_gamma_is_accepted_when_a_method_uses_it():
    specs = expand(Sweep(["ce", "focal"], ["cifar10_lt"], [100], overrides={"gamma": "2"}))
    assert {s.method: s.params.get("gamma") for s in specs} == {"ce": None, "focal": 2.0}


def test_coerce_types():
    assert coerce("amp", "false", True) is False
    assert coerce("epochs", "20", 200) == 20
    assert coerce("milestones", [0.5, 1], [0.8]) == [0.5, 1.0]
    # compile is on/off or a torch.compile mode
    assert coerce("compile", "on", False) is True and coerce("compile", "reduce-overhead", False) == "reduce-overhead"
    with pytest.raises(UserError):
        coerce("epochs", "2.5", 200)


def test_config_file(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('methods = ["ce", "focal"]\ndataset = "fashion_mnist_lt"\nif = [100]\n'
                    'preset = "smoke"\n[set]\nlr = 0.05\n[set.focal]\ngamma = 2.0\n')
    config = read_config(path)
    assert config["set"] == {"lr": 0.05, "focal.gamma": 2.0}
    (tmp_path / "bad.toml").write_text('methodz = ["ce"]\n')
    with pytest.raises(UserError, match="unknown config key"):
        read_config(tmp_path / "bad.toml")
    (tmp_path / "broken.toml").write_text('methods = [\n')
    with pytest.raises(UserError, match="not valid TOML"):
        read_config(tmp_path / "broken.toml")
