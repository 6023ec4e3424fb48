"""MaxNorm by projected gradient descent (Alshammari et al. 2022, Eq. 5): after a trainer's
step every class weight vector lies in the ball, and those already inside are untouched."""

import math

import pytest
import torch

from ltbench.constraints import is_due, max_norm_, radius_between_norms
from ltbench.method import Progress
from ltbench.testing import toy_data, toy_spec, toy_trainer


def test_rows_outside_the_ball_are_scaled_onto_it_and_the_others_kept():
    weight = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, -2.0], [1.2, 1.6]])  # norms 5, 0.5, 2, 2
    before = weight.clone()
    max_norm_(weight, 2.0)
    assert weight[0].tolist() == pytest.approx([1.2, 1.6])  # 5 -> 2 along its own direction
    assert torch.equal(weight[1:], before[1:])  # inside the ball, or on it: bit for bit unchanged


def test_radius_lies_between_the_smallest_and_largest_norm():
    weight = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, -2.0]])  # norms 5, 0.5, 2
    assert radius_between_norms(weight, 0.0) == pytest.approx(0.5)
    assert radius_between_norms(weight, 0.1) == pytest.approx(0.5 + 0.1 * 4.5)
    assert radius_between_norms(weight, 1.0) == pytest.approx(5.0)


def test_epoch_constraints_wait_for_the_epochs_last_step():
    assert is_due("step", Progress(0, 2, 0, 3))
    assert not is_due("epoch", Progress(0, 2, 1, 3))
    assert is_due("epoch", Progress(0, 2, 2, 3))


@pytest.mark.parametrize("every", ["step", "epoch"])
def test_after_a_trainers_step_every_class_norm_is_within_the_radius(every):
    trainer = toy_trainer(toy_spec("weight_balancing"), toy_data())
    method = trainer.method
    method.hp["wb_max_norm_every"] = every
    radius = float(method.max_norm_radius)
    assert math.isfinite(radius)
    norms = method.classifier.weight.detach().norm(dim=1)
    assert (norms > radius + 1e-6).any(), "the stage-1 classifier should start with rows outside the ball"
    batches = next(iter(trainer.loader.epoch()))
    steps = trainer.loader.steps_per_epoch
    # a step whose projection is due: every row ends in the ball
    trainer.train_step(batches, Progress(0, trainer.epochs, steps - 1, steps))
    assert (method.classifier.weight.detach().norm(dim=1) <= radius * (1 + 1e-6)).all()


def test_rows_inside_the_ball_leave_a_step_as_sgd_left_them():
    trainer = toy_trainer(toy_spec("weight_balancing"), toy_data())
    method = trainer.method
    radius = float(method.max_norm_radius)
    batches = next(iter(trainer.loader.epoch()))
    steps = trainer.loader.steps_per_epoch
    # the same step without the projection, then with it: rows SGD left inside agree exactly
    free = toy_trainer(toy_spec("weight_balancing"), toy_data())
    free.method.max_norm_radius.fill_(math.inf)
    torch.manual_seed(0)
    free.train_step(next(iter(free.loader.epoch())), Progress(0, free.epochs, steps - 1, steps))
    torch.manual_seed(0)
    trainer.train_step(batches, Progress(0, trainer.epochs, steps - 1, steps))
    unconstrained = free.method.classifier.weight.detach()
    inside = unconstrained.norm(dim=1) <= radius
    assert inside.any() and not inside.all()
    assert torch.equal(method.classifier.weight.detach()[inside], unconstrained[inside])
    assert not torch.equal(method.classifier.weight.detach()[~inside], unconstrained[~inside])


PLUGIN = '''
import torch.nn.functional as F
from ltbench.constraints import is_due, max_norm_, max_norm_settings
from ltbench.method import LinearClassifierMethod

class CappedCE(LinearClassifierMethod):
    """Cross-entropy with every class weight vector capped at the smallest norm it starts with."""

    name = "capped_ce"
    hyperparameters = max_norm_settings("cap", 0.0, "step", fraction_source="the plugin's own choice",
                                        every_source="the plugin's own choice")

    def criterion(self, logits, labels, progress):
        return F.cross_entropy(logits, labels)

    def after_step(self, progress):
        if is_due(self.hp["cap_max_norm_every"], progress):
            max_norm_(self.classifier.weight, self.classifier.weight.norm(dim=1).min())
'''


@pytest.fixture
def capped_plugin(tmp_path, monkeypatch):
    from test_plugins import installed_method

    with installed_method(tmp_path, monkeypatch, "capped_ce_plugin", PLUGIN, "capped_ce = capped_ce_plugin:CappedCE"):
        yield


def test_a_plugin_constrains_its_weights_through_the_same_hook(capped_plugin):
    trainer = toy_trainer(toy_spec("capped_ce"), toy_data())
    weight = trainer.method.classifier.weight
    batches = next(iter(trainer.loader.epoch()))
    trainer.train_step(batches, Progress(0, trainer.epochs, 0, trainer.loader.steps_per_epoch))
    norms = weight.detach().norm(dim=1)
    # every row projected onto the smallest norm after the step: all norms equal
    assert torch.allclose(norms, norms.min().expand_as(norms), rtol=1e-5)
