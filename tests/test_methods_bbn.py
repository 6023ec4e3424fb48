"""BBN: the reversed sampler's class frequencies, the cumulative learning schedule and the
bilateral loss against plain-float re-derivations of Megvii-Nanjing/BBN (lib/core/combiner.py,
lib/dataset/imbalance_cifar.py), and the two branches sharing all but the last block."""

import pytest
import timm
import torch

from ltbench.data.samplers import ReversedSampler
from ltbench_methods.bbn import BilateralBranch, bbn_loss, cumulative_alpha
from test_methods_losses import COUNTS, softmax_nll


def test_the_reversed_sampler_draws_classes_in_proportion_to_n_max_over_n():
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(COUNTS)])
    sampler = ReversedSampler(labels, len(COUNTS) + 1)  # one class without images: never drawn
    gen = torch.Generator().manual_seed(0)
    drawn = torch.cat([labels[sampler.epoch(gen)] for _ in range(400)])
    frequency = torch.bincount(drawn, minlength=len(COUNTS)).double() / len(drawn)
    weights = [max(COUNTS) / n for n in COUNTS]  # imbalance_cifar.py get_weight: max_num / num
    expected = [w / sum(weights) for w in weights]
    assert frequency.tolist() == pytest.approx(expected, abs=0.005)
    assert len(sampler.epoch(gen)) == len(labels)


def test_cumulative_alpha_is_a_parabola_from_one():
    # combiner.py L48: 1 - ((epoch - 1) / div_epoch)^2, 1-based epochs; 90 and 180 divide by 100, 200
    assert [cumulative_alpha(e, 200) for e in (0, 100, 199)] == pytest.approx([1.0, 0.75, 1 - (199 / 200) ** 2])
    assert cumulative_alpha(90, 180) == pytest.approx(1 - (90 / 200) ** 2)
    assert cumulative_alpha(45, 90) == pytest.approx(1 - (45 / 100) ** 2)


@pytest.mark.parametrize("alpha", [1.0, 0.75, 0.3, 0.0])
def test_bbn_loss_by_hand(alpha):
    gen = torch.Generator().manual_seed(2)
    conventional, rebalancing = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen)
    labels, reversed_labels = torch.randint(0, 5, (6,), generator=gen), torch.randint(0, 5, (6,), generator=gen)
    classifier = torch.nn.Linear(8, 5)
    got = bbn_loss(classifier, conventional, rebalancing, labels, reversed_labels, alpha).item()
    w, b = classifier.weight.tolist(), classifier.bias.tolist()
    want = 0.0
    for fc, fr, y, yr in zip(conventional.tolist(), rebalancing.tolist(), labels.tolist(), reversed_labels.tolist()):
        mixed = [2 * alpha * v for v in fc] + [2 * (1 - alpha) * v for v in fr]
        z = [sum(wi * m for wi, m in zip(row, mixed)) + bj for row, bj in zip(w, b)]
        want += alpha * softmax_nll(z, y) + (1 - alpha) * softmax_nll(z, yr)
    assert got == pytest.approx(want / 6, rel=1e-5)


def test_test_time_logits_read_both_branches_unweighted():
    method = BilateralBranch({}, COUNTS, feature_dim=4)
    features = torch.randn(3, 2, 4)
    expected = method.classifier(torch.cat([features[:, 0], features[:, 1]], 1))
    assert torch.allclose(method.logits(features), expected)


@pytest.mark.parametrize("name", ["bbn_resnet32_cifar", "bbn_resnet8_cifar"])
def test_the_branches_share_all_but_the_last_block(name):
    backbone = timm.create_model(name)
    plain = timm.create_model(name.removeprefix("bbn_"), num_classes=0)
    last = list(plain.layers)[-1]
    # one more copy of the last residual block than the plain network has
    extra = sum(p.numel() for p in backbone.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == sum(p.numel() for p in last.parameters())
    # a batch run through one branch leaves the other's BatchNorm statistics as they were
    other = [m.running_mean.clone() for m in backbone.experts[1].modules() if isinstance(m, torch.nn.BatchNorm2d)]
    backbone(torch.randn(4, 3, 32, 32), experts=[0])
    after = [m.running_mean for m in backbone.experts[1].modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.equal(a, b) for a, b in zip(other, after))
    with torch.no_grad():
        assert torch.isfinite(backbone(torch.randn(2, 3, 32, 32))).all()
