"""Protocol details as the original code has them, and a protocol card that says where each
value comes from: every test here fails if a method drifts from its source."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ltbench import registry
from ltbench.card import card_datasets, protocol_card
from ltbench.cli import main
from ltbench.data.datasets import LongTailData
from ltbench.data.loader import DeviceLoader
from ltbench.migrate import upgrade_spec
from ltbench.settings import PROTOCOL, SETTINGS
from ltbench.sweep import resolve
from ltbench.testing import toy_data, toy_spec, toy_trainer
from ltbench.train import learning_rate
from ltbench_methods.sc_hybrid import SupConLoss

BUILT_IN = [name for name, cls in registry.methods().items() if cls.__module__.startswith("ltbench_methods.")]
HYBRIDS = ["sc_hybrid", "psc_hybrid"]
FIXTURE = Path(__file__).parent / "fixtures" / "results_v0_1"


# ---------------------------------------------------------------------- provenance


def test_every_protocol_setting_of_the_trainer_says_where_it_comes_from():
    assert [n for n, s in SETTINGS.items() if s.kind == PROTOCOL and not s.source] == []


@pytest.mark.parametrize("name", BUILT_IN)
def test_protocol_card_has_every_setting_on_every_family_with_its_source(name):
    rows = protocol_card(name)
    cls = registry.method(name)
    own = [(c.name, k) for c in cls.chain() for k in c.hyperparameters]
    assert [(r.owner, r.name) for r in rows] == [("trainer", k) for k in SETTINGS] + own
    for row in rows:
        assert set(row.values) == set(card_datasets()) and all(row.sources.values()), row
    spec = resolve(name, "imagenet_lt", 256, 0, "paper")
    lr = next(r for r in rows if r.name == "lr")
    assert lr.values["imagenet_lt"] == str(spec.params["lr"])


def test_card_names_the_source_of_a_dataset_protocol_and_of_a_method_value(capsys):
    assert main(["list", "crt"]) == 0
    out = capsys.readouterr().out
    for text in ("crt.crt_bn_train", "crt.crt_lr_step_first", "ce.classifier_init", "run_networks.py L247-249",
                 "config/ImageNet_LT/cls_crt.yaml", "feat_uniform.yaml", "CIFAR-10-LT", "iNaturalist 2018"):
        assert text in out, text
    assert main(["list", "sc_hybrid"]) == 0
    assert "Wang et al. CVPR 2021" in capsys.readouterr().out


def test_list_without_a_method_still_lists_everything_and_an_unknown_method_is_refused(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "Methods" in out and "Datasets" in out
    assert main(["list", "no_such_method"]) == 2
    assert "unknown method" in capsys.readouterr().err


# ---------------------------------------------------------------------- item 3: schedules


@pytest.mark.parametrize("dataset", list(registry.datasets()))
@pytest.mark.parametrize("name", HYBRIDS)
def test_hybrids_keep_their_step_schedule_on_every_dataset(name, dataset):
    spec = resolve(name, dataset, registry.dataset(dataset).fixed_imbalance_factor or 100, 0, "paper")
    p = spec.params
    assert (p["schedule"], p["milestones"], p["lr_factors"], p["lr"], spec.batch_size) == (
        "step", [0.6, 0.8], [0.1, 0.01], 0.5, 512)


# ---------------------------------------------------------------------- item 4: decoupling's stage 2


@pytest.mark.parametrize("name", ["crt", "lws"])
def test_stage2_runs_as_classifier_balancing_runs_it(name):
    trainer = toy_trainer(toy_spec(name), toy_data())
    assert trainer.backbone.bn_train  # run_networks.py L247-249
    p, epochs = trainer.params, trainer.epochs
    assert p["schedule"] == "cosine" and trainer.lr_step_first
    # CosineAnnealingLR stepped before each epoch (run_networks.py L255): epoch e trains at (e + 1) / E
    want = [p["lr"] * 0.5 * (1 + math.cos(math.pi * (e + 1) / epochs)) for e in range(epochs)]
    assert [learning_rate(e, epochs, p, step_first=True) for e in range(epochs)] == pytest.approx(want)
    assert learning_rate(epochs - 1, epochs, p, step_first=True) == 0
    # the lr the trainer sets each epoch is the one the plan asks for
    seen = []
    trainer.step_hook = lambda epoch, step, loss: seen.append(trainer.optimizer.param_groups[0]["lr"])
    trainer.fit()
    assert sorted(set(seen), reverse=True) == pytest.approx(want)


def test_stage2_values_follow_the_datasets_own_configs():
    crt = resolve("crt", "inat2018", 500, 0, "paper").own_hyperparameters
    assert (crt["crt_epochs"], crt["crt_weight_decay"]) == (30, 1e-4)  # config/iNaturalist18/cls_crt.yaml
    crt = resolve("crt", "imagenet_lt", 256, 0, "paper").own_hyperparameters
    assert (crt["crt_epochs"], crt["crt_weight_decay"], crt["crt_lr"], crt["crt_batch_size"]) == (10, 5e-4, 0.2, 512)
    assert resolve("lws", "inat2018", 500, 0, "paper").own_hyperparameters["lws_weight_decay"] == 1e-4
    for name in ("crt", "lws"):  # config/Places_LT/cls_crt.yaml and cls_lws.yaml: lr 0.1, batch 256
        own = resolve(name, "places_lt", 996, 0, "paper").own_hyperparameters
        assert (own[f"{name}_lr"], own[f"{name}_batch_size"], own[f"{name}_weight_decay"]) == (0.1, 256, 5e-4), name
    assert resolve("lws", "places_lt", 996, 0, "paper").own_hyperparameters["lws_epochs"] == 5


# ---------------------------------------------------------------------- item 5: smaller differences


@pytest.mark.parametrize("name", ["ce", "focal", "ce_drw"])
def test_ce_family_classifier_starts_as_its_original_code(name):
    cls = registry.method(name)
    torch.manual_seed(0)
    counts = [10] * 1000
    cifar = cls(resolve(name, "cifar10_lt", 100, 0, "paper").own_hyperparameters, counts, 512)
    imagenet = cls(resolve(name, "imagenet_lt", 256, 0, "paper").own_hyperparameters, counts, 512)
    # kaiming_normal_ (LDAM-DRW resnet_cifar.py): std sqrt(2 / fan_in); nn.Linear's own: 1 / sqrt(3 fan_in)
    assert cifar.classifier.weight.std().item() == pytest.approx(math.sqrt(2 / 512), rel=0.02)
    assert imagenet.classifier.weight.std().item() == pytest.approx(1 / math.sqrt(3 * 512), rel=0.02)


@pytest.mark.parametrize("bias_weight_decay", [False, True])
def test_cb_focal_bias_trains_without_weight_decay_as_the_original(bias_weight_decay):
    trainer = toy_trainer(toy_spec("cb_focal", **{"cb_focal.bias_weight_decay": str(bias_weight_decay)}), toy_data())
    bias = trainer.method.classifier.bias
    decay = {id(q): g["weight_decay"] for g in trainer.optimizer.param_groups for q in g["params"]}
    assert decay[id(bias)] == (trainer.params["weight_decay"] if bias_weight_decay else 0.0)
    assert decay[id(trainer.method.classifier.weight)] == trainer.params["weight_decay"]
    assert len(decay) == len(list(trainer.backbone.parameters())) + len(list(trainer.method.parameters()))
    assert torch.allclose(bias, torch.full_like(bias, -math.log(trainer.method.num_classes - 1)))


def test_supcon_base_temperature_scales_the_loss_as_supcontrast_does():
    gen = torch.Generator().manual_seed(0)
    embeddings = torch.nn.functional.normalize(torch.randn(16, 8, generator=gen), dim=1)
    labels = torch.randint(0, 3, (16,), generator=gen)
    plain, scaled = SupConLoss(0.1)(embeddings, labels), SupConLoss(0.1, 0.07)(embeddings, labels)
    assert scaled.item() == pytest.approx(plain.item() * 0.1 / 0.07)
    # the default is the paper's equation: no factor
    assert resolve("sc_hybrid", "cifar10_lt", 100, 0, "paper").own_hyperparameters["base_temperature"] is None


@pytest.mark.parametrize("name", HYBRIDS)
def test_hybrid_classifier_branch_takes_the_papers_augmentation(name):
    cls = registry.method(name)
    method = cls(resolve(name, "cifar10_lt", 100, 0, "paper").own_hyperparameters, [50, 20, 5], 64)
    feature, classifier = method.draws["feature"], method.draws["classifier"]
    assert (classifier.augment, classifier.augment_options) == (feature.augment, feature.augment_options)
    assert classifier.augment_options["grayscale_p"] == 0.2
    standard = cls(resolve(name, "cifar10_lt", 100, 0, "paper", {"classifier_augment": "standard"}).own_hyperparameters,
                   [50, 20, 5], 64)
    assert standard.draws["classifier"].augment == "standard"
    # on colour images some of the classifier branch's views come out grey
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (96, 3, 32, 32), dtype=np.uint8)
    y = np.repeat(np.arange(3), 32)
    data = LongTailData("rgb", x, y, x[:3], y[:3], [32, 32, 32], (0.5,) * 3, (0.5,) * 3)
    views = next(DeviceLoader(data, method.draws, 64, "cpu", seed=0).epoch())["classifier"].views[0]
    grey = (views[:, 0] == views[:, 1]).flatten(1).all(1) & (views[:, 1] == views[:, 2]).flatten(1).all(1)
    assert 0 < int(grey.sum()) < len(views)


# ---------------------------------------------------------------------- earlier results


def test_runs_of_the_previous_version_record_the_values_they_ran_with():
    spec = upgrade_spec(json.loads((FIXTURE / "1afd6287276f" / "spec.json").read_text()))
    assert spec.method == "crt" and spec.preset == "custom"
    assert spec.hyperparameters["ce"]["classifier_init"] == "default"
    assert not spec.own_hyperparameters["crt_bn_train"] and not spec.own_hyperparameters["crt_lr_step_first"]


# ---------------------------------------------------------------------- iNaturalist, quick, the card


@pytest.mark.parametrize("name", ["ldam", "ldam_drw", "ce_drw"])
def test_cao_et_al_inaturalist_rows_are_compared_with_the_paper_runs(name):
    from ltbench.report.reference import has_protocol, load_published

    # App. B: 90 epochs, lr 0.1 annealed at 30 and 60, re-balancing from 60, largest margin 0.3
    spec = resolve(name, "inat2018", 500, 0, "paper")
    assert spec.preset == "paper"
    p = spec.params
    assert (spec.epochs, p["lr"], p["schedule"], p["warmup_epochs"]) == (90, 0.1, "step", 0)
    assert [round(m * spec.epochs) for m in p["milestones"]] == [30, 60]
    own = spec.own_hyperparameters
    if "drw_start" in own:
        assert round(own["drw_start"] * spec.epochs) == 60
    if "max_margin" in own:
        assert own["max_margin"] == 0.3
    published = load_published()
    row = published[(published["method"] == name) & (published["dataset"] == "inat2018")].iloc[0]
    run = {"backbone": spec.backbone, "epochs": spec.epochs, "profile": spec.profile,
           "params_key": json.dumps(spec.flat_params())}
    assert row["source"].startswith("Cao et al. 2019") and has_protocol(run, row)


def test_an_unconfirmed_paper_protocol_is_not_called_paper(capsys):
    assert resolve("cb_focal", "inat2018", 500, 0, "paper").preset == "custom"
    assert resolve("cb_focal", "cifar10_lt", 100, 0, "paper").preset == "paper"
    assert main(["list", "cb_focal"]) == 0
    assert "Not a paper protocol on iNaturalist 2018" in capsys.readouterr().out


def test_quick_keeps_a_warm_up_only_where_the_protocol_has_one():
    for name in ["ce", "ldam_drw", "crt"]:
        assert resolve(name, "cifar10_lt", 100, 0, "quick").params["warmup_epochs"] == 1, name
    for name in HYBRIDS:  # Wang et al. describe no warm-up
        assert resolve(name, "cifar10_lt", 100, 0, "quick").params["warmup_epochs"] == 0, name
    assert resolve("ce", "imagenet_lt", 256, 0, "quick").params["warmup_epochs"] == 0  # decoupling: none


def test_the_card_has_a_fashion_mnist_column_and_takes_a_preset(capsys):
    assert "fashion_mnist_lt" in card_datasets()
    quick = {r.name: r for r in protocol_card("sc_hybrid", preset="quick")}
    assert quick["epochs"].values["fashion_mnist_lt"] == "12" and quick["warmup_epochs"].values["cifar10_lt"] == "0"
    assert "quick preset" in quick["epochs"].sources["cifar10_lt"]
    assert "scaled linearly" in quick["lr"].sources["cifar10_lt"]  # 0.5 at batch 512 -> 0.125 at 128
    assert main(["list", "ce", "--preset", "quick"]) == 0
    out = capsys.readouterr().out
    assert "Fashion-MNIST-LT" in out and "The quick preset's values" in out
    assert main(["list", "ce", "--preset", "nosuch"]) == 2
