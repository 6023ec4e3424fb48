"""Two-stage methods: stage 1 is exactly the CE run of the same spec; stage 2 leaves the
backbone alone; post-hoc choices never look at the test set; bad settings are refused."""

import numpy as np
import pytest
import torch

from ltbench.errors import UserError
from ltbench.models import create_backbone
from ltbench.stages import FrozenBackbone, stage1_spec
from ltbench.sweep import Sweep, expand, resolve
from ltbench.testing import two_stage_methods
from ltbench_methods.tau_norm import TauNormalisation, calibration_images

@pytest.mark.parametrize("name, stage1", two_stage_methods().items())
@pytest.mark.parametrize("preset", ["paper", "quick", "smoke"])
def test_stage1_is_the_run_of_its_stage1_method_with_the_same_spec(name, stage1, preset):
    spec = resolve(name, "fashion_mnist_lt", 100, 3, preset, {})
    plain = resolve(stage1, "fashion_mnist_lt", 100, 3, preset, {})
    first = stage1_spec(spec)
    assert first == plain and first.run_id == plain.run_id and first.preset == preset


def test_stage1_follows_shared_settings_but_not_stage2_ones():
    custom = resolve("crt", "cifar10_lt", 50, 1, "quick", {"lr": "0.05", "epochs": "20"})
    assert stage1_spec(custom) == resolve("ce", "cifar10_lt", 50, 1, "quick", {"lr": "0.05", "epochs": "20"})
    assert stage1_spec(custom).preset == "custom"
    own = resolve("crt", "cifar10_lt", 50, 1, "quick", {"crt_lr": "0.1", "crt_epochs": "30"})
    assert own.preset == "custom" and own.own_hyperparameters["crt_lr"] == 0.1
    assert stage1_spec(own) == resolve("ce", "cifar10_lt", 50, 1, "quick", {})  # still the plain quick CE run
    assert stage1_spec(resolve("ldam_drw", "cifar10_lt", 50, 1, "quick", {})) is None


@pytest.mark.parametrize("method, overrides, message", [
    ("crt", {"crt_epochs": "0"}, "crt.crt_epochs=0 is out of range: it must be >= 1"),
    ("crt", {"crt_lr": "-1"}, "crt.crt_lr=-1.0 is out of range: it must be > 0"),
    ("lws", {"lws_batch_size": "0"}, "lws.lws_batch_size=0 is out of range"),
    ("crt", {"crt.gamma": "2"}, "crt has no setting gamma; it is focal.gamma"),
    ("tau_norm", {"tau_grid": "-1,1"}, "tau_norm.tau_grid=-1.0,1.0 is out of range"),
    ("tau_norm", {"tau_grid": ","}, "tau_grid is empty"),
    ("ldam_drw", {"drw_start": "1.5"}, "ldam_drw.drw_start=1.5 is out of range: it must be >= 0 and <= 1"),
    ("ce_drw", {"drw_beta": "1"}, "ce_drw.drw_beta=1.0 is out of range: it must be >= 0 and < 1"),
    ("cb_focal", {"gamma": "-1"}, "cb_focal.gamma=-1.0 is out of range"),
    ("ldam", {"max_margin": "0"}, "ldam.max_margin=0.0 is out of range: it must be > 0"),
])
def test_bad_settings_are_refused_before_training(method, overrides, message):
    with pytest.raises(UserError, match=message):
        expand(Sweep([method], ["fashion_mnist_lt"], [100], overrides=overrides))


@pytest.mark.parametrize("bn_train", [False, True])
def test_frozen_backbone_has_no_gradients_and_keeps_its_statistics(bn_train):
    torch.manual_seed(0)
    backbone = create_backbone("resnet8_cifar", 1)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    frozen = FrozenBackbone(backbone, bn_train=bn_train).train()
    features = frozen(torch.randn(8, 1, 32, 32))
    assert not features.requires_grad and not any(p.requires_grad for p in frozen.parameters())
    bn = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.training == bn_train for m in bn)
    moved = any(not torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    assert moved == bn_train  # running statistics move only when asked to


def _toy_data(counts, held=None):
    """Images whose pixel value is their identity: training images 0.., held-out ones 200.."""
    labels = np.repeat(np.arange(len(counts)), counts)
    data = {"train_x": np.arange(len(labels), dtype=np.uint8)[:, None].repeat(4, 1), "train_y": labels,
            "test_x": None, "test_y": None, "num_classes": len(counts), "class_counts": list(counts)}
    if held is not None:
        held_y = np.repeat(np.arange(len(counts)), held)
        data.update(holdout_x=(200 + np.arange(len(held_y), dtype=np.uint8))[:, None].repeat(4, 1), holdout_y=held_y)
    return type("Data", (), data)()


def test_calibration_images_are_held_out_first_then_topped_up_from_training():
    # the head class keeps all its images (none held out); the others have some left out
    data = _toy_data([50, 10, 3], held=[0, 2, 5])
    x, y, held_share = calibration_images(data, per_class=4, seed=0)
    assert np.bincount(y).tolist() == [4, 4, 4]
    held = x[:, 0] >= 200
    assert [int(held[y == c].sum()) for c in range(3)] == [0, 2, 4]  # every held-out image first
    assert held_share == 6 / 12
    # fewer than asked for in the smallest class: every class gets that many
    x, y, _ = calibration_images(data, per_class=100, seed=0)
    assert np.bincount(y).tolist() == [8, 8, 8]
    # no held-out images at all (the published image-file splits): training images only
    x, y, held_share = calibration_images(_toy_data([5, 3]), per_class=2, seed=0)
    assert np.bincount(y).tolist() == [2, 2] and held_share == 0 and (x[:, 0] < 200).all()


class FakeTrainer:
    """What tau_norm.calibrate may use: training data and features of the images it asks for."""

    def __init__(self, data, classifier, seed=0):
        self.data, self.seed, self.classifier = data, seed, classifier
        self.asked = []

    def features(self, x, y):
        self.asked.append(x)
        # a feature that identifies the class, so the best tau is well defined
        return torch.nn.functional.one_hot(torch.from_numpy(y), 4).float()


def test_tau_is_chosen_on_held_out_images_never_on_the_test_set():
    data = _toy_data([500, 100, 20, 5], held=[0, 10, 10, 10])
    m = TauNormalisation({**TauNormalisation.defaults(), "tau_grid": [0.0, 1.0, 2.0]}, [500, 100, 20, 5], 4)
    with torch.no_grad():
        # class 0's large weight vector wins every input at tau = 0; normalised (tau >= 1),
        # every class wins on its own images
        m.classifier.weight.copy_(torch.tensor([[8.0, 3, 3, 3], [0, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0.5]]))
    trainer = FakeTrainer(data, m.classifier)
    chosen = m.calibrate(trainer)
    (asked,) = trainer.asked
    known = np.concatenate([data.train_x[:, 0], data.holdout_x[:, 0]])
    assert np.isin(asked[:, 0], known).all()  # training-split images only, no test image
    assert chosen["tau"] == 1.0 and m.tau.item() == 1.0  # ties go to the first in the grid
    assert chosen["images_per_class"] == 15 and chosen["held_out_share"] == 0.5  # 30 of 60
    assert chosen["balanced_accuracy"] == 100.0




@pytest.mark.parametrize("fields, message", [
    ({"epochs": -1, "batch_size": 8}, "epochs must be an int >= 0"),
    ({"epochs": 2, "batch_size": 8, "settings": {"batch_size": 4}}, "other than the spec's own fields"),
    ({"epochs": 2, "batch_size": 8, "settings": {"cb_per_class": 4}}, "not \\['cb_per_class'\\]"),
    ({"epochs": 2, "batch_size": 8, "lr_step_first": 1}, "lr_step_first must be a bool"),
])
def test_a_stage2_plan_refuses_what_the_trainer_does_not_know(fields, message):
    from ltbench.settings import Stage2Plan

    with pytest.raises(ValueError, match=message):
        Stage2Plan(**fields)
    with pytest.raises(UserError, match="stage 2 lr=-1.0 is out of range"):
        Stage2Plan(epochs=1, batch_size=8, settings={"lr": -1.0})
