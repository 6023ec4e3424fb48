"""Weight balancing's class-balanced loss against a per-element re-derivation of
LTR-weight-balancing's CB_loss(loss_type="softmax"), and its stage 2 set up from stage 1."""

import math

import pytest
import torch

from ltbench.testing import toy_data, toy_spec, toy_trainer
from ltbench_methods.weight_balancing import WeightBalancing, cb_softmax_loss
from test_methods_losses import CASES, COUNTS, batch, ref_effective_weights


def ref_cb_softmax(logits, labels, counts, beta):
    """sum over images i and classes c of w_{y_i} BCE(softmax(z_i)_c, [c == y_i]) / (N C)."""
    weights = ref_effective_weights(counts, beta)
    total, rows = 0.0, logits.tolist()
    for row, y in zip(rows, labels.tolist()):
        top = max(row)
        exps = [math.exp(v - top) for v in row]
        probs = [e / sum(exps) for e in exps]
        for c, p in enumerate(probs):
            total += weights[y] * -(math.log(p) if c == y else math.log(1 - p))
    return total / (len(rows) * len(counts))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("beta", [0.0, 0.9999])
def test_cb_softmax_loss_is_the_weighted_bce_of_the_softmax(case, beta):
    logits, labels = batch(**CASES[case], scale=1.5, dtype=torch.float64)
    weights = torch.tensor(ref_effective_weights(COUNTS, beta), dtype=torch.float64)
    got = cb_softmax_loss(logits, labels, weights).item()
    assert got == pytest.approx(ref_cb_softmax(logits, labels, COUNTS, beta), rel=1e-9)


def test_a_known_value():
    # two classes, logits (0, 0): p = 1/2 for both, so each term is log 2; weights at beta 0 are 1
    logits, labels = torch.zeros(1, 2), torch.tensor([0])
    assert cb_softmax_loss(logits, labels, torch.ones(2)).item() == pytest.approx(math.log(2))


def test_the_method_weights_by_the_effective_number_of_its_counts():
    hp = WeightBalancing.defaults()
    method = WeightBalancing(hp, COUNTS, feature_dim=4)
    assert method.class_weights.tolist() == pytest.approx(ref_effective_weights(COUNTS, hp["wb_cb_beta"]), rel=1e-6)


def test_stage_two_starts_from_the_stage_one_classifier_with_its_radius():
    trainer = toy_trainer(toy_spec("weight_balancing"), toy_data())
    method = trainer.method
    norms = method.classifier.weight.detach().norm(dim=1)
    fraction = method.hp["wb_max_norm"]
    expected = norms.min() + fraction * (norms.max() - norms.min())
    assert float(method.max_norm_radius) == pytest.approx(float(expected), rel=1e-6)
    assert not any(p.requires_grad for p in trainer.backbone.parameters())
    assert trainer.params["weight_decay"] == method.hp["wb_weight_decay"]


def test_published_figures_as_alshammari_et_al_print_them():
    # Table 2 (CIFAR-100-LT) and Table 3 (ImageNet-LT, iNaturalist): rows 'WD' and '+ WD & Max'
    from ltbench.report.reference import load_published

    published = load_published()

    def figures(method):
        rows = published[published["method"] == method]
        assert rows["confirmed"].all()
        return {(d, None if f != f else int(f)): t for d, f, t in zip(rows["dataset"], rows["imbalance_factor"], rows["top1"])}

    assert figures("weight_balancing") == {("cifar100_lt", 100): 53.35, ("cifar100_lt", 50): 57.71,
                                           ("cifar100_lt", 10): 68.67, ("imagenet_lt", None): 53.9,
                                           ("inat2018", None): 70.2}
    assert figures("ce_wd") == {("cifar100_lt", 100): 46.08, ("cifar100_lt", 50): 52.71, ("cifar100_lt", 10): 66.03,
                                ("imagenet_lt", None): 48.6, ("inat2018", None): 65.4}
