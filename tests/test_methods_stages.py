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
from ltbench_methods.logit_adjust import PostHocLogitAdjustment
from ltbench_methods.tau_norm import TauNormalisation

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


def _toy_data(counts, val):
    """Images whose pixel value is their identity: training images 0.., validation ones 200.."""
    labels = np.repeat(np.arange(len(counts)), counts)
    val_y = np.repeat(np.arange(len(counts)), val)
    data = {"name": "toy", "train_x": np.arange(len(labels), dtype=np.uint8)[:, None].repeat(4, 1), "train_y": labels,
            "test_x": None, "test_y": None, "num_classes": len(counts), "class_counts": list(counts),
            "val_x": (200 + np.arange(len(val_y), dtype=np.uint8))[:, None].repeat(4, 1), "val_y": val_y}
    return type("Data", (), data)()


class FakeTrainer:
    """What a post-hoc choice may use: the data and the features of the images it asks for."""

    def __init__(self, data, seed=0):
        self.data, self.seed = data, seed
        self.asked = []

    def features(self, x, y):
        self.asked.append(x)
        # a feature that identifies the class, so the best tau is well defined
        return torch.nn.functional.one_hot(torch.from_numpy(y), 4).float()


def test_tau_is_chosen_on_the_validation_split_never_on_training_or_test_images():
    # the head class keeps all its images, so has no validation image
    data = _toy_data([500, 100, 20, 5], val=[0, 10, 10, 10])
    m = TauNormalisation({**TauNormalisation.defaults(), "tau_grid": [0.0, 1.0, 2.0]}, [500, 100, 20, 5], 4)
    with torch.no_grad():
        # class 0's large weight vector wins every input at tau = 0; normalised (tau >= 1),
        # every class wins on its own images
        m.classifier.weight.copy_(torch.tensor([[8.0, 3, 3, 3], [0, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0.5]]))
    trainer = FakeTrainer(data)
    chosen = m.calibrate(trainer)
    (asked,) = trainer.asked
    assert np.array_equal(asked, data.val_x)  # the validation images, all of them, nothing else
    assert chosen["tau"] == 1.0 and m.tau.item() == 1.0  # ties go to the first in the grid
    assert (chosen["val_images"], chosen["val_classes"], chosen["balanced_accuracy"]) == (30, 3, 100.0)
    assert chosen["selection"] == "balanced accuracy on the validation split"


def test_without_a_validation_image_tau_is_fixed_or_the_run_says_why():
    data = _toy_data([5, 5, 5, 5], val=[0, 0, 0, 0])
    m = TauNormalisation({**TauNormalisation.defaults(), "tau_grid": [0.0, 1.0]}, [5, 5, 5, 5], 4)
    with pytest.raises(UserError, match="tau_norm chooses tau on the validation split") as info:
        m.calibrate(FakeTrainer(data))
    assert "tau_norm.tau_grid=1.0" in info.value.hint
    fixed = TauNormalisation({**TauNormalisation.defaults(), "tau_grid": [0.7]}, [5, 5, 5, 5], 4)
    trainer = FakeTrainer(data)
    assert fixed.calibrate(trainer)["tau"] == 0.7 and fixed.tau.item() == pytest.approx(0.7) and not trainer.asked


def test_posthoc_logit_adjustment_keeps_tau_1_unless_asked_to_choose_on_validation():
    counts = [500, 100, 20, 5]
    data = _toy_data(counts, val=[5, 5, 5, 5])
    m = PostHocLogitAdjustment(PostHocLogitAdjustment.defaults(), counts, 4)
    m.classifier = torch.nn.Linear(4, 4, bias=False).requires_grad_(False)
    with torch.no_grad():  # the prior's pull towards class 0, and the evidence for each class
        m.classifier.weight.copy_(torch.eye(4) * 3 + torch.tensor([[4.0] * 4, [1.0] * 4, [0.0] * 4, [0.0] * 4]))
    trainer = FakeTrainer(data)
    assert m.calibrate(trainer)["tau"] == 1.0 and m.tau.item() == 1.0 and not trainer.asked
    m.hp = {**m.hp, "tau_grid": [0.0, 1.0, 2.0]}
    chosen = m.calibrate(trainer)
    # tau 0 leaves class 0 winning everywhere; tau 1 corrects enough (ties go to the first)
    assert chosen["tau"] == 1.0 and m.tau.item() == 1.0 and chosen["balanced_accuracy"] == 100.0
    (asked,) = trainer.asked
    assert np.array_equal(asked, data.val_x)


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
