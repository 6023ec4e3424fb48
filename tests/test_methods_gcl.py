"""GCL's loss against a per-element re-derivation of Keke921/GCLLoss's GCLLoss (losses.py
L53-83) on the same Gaussian draws, from a seeded generator."""

import math

import pytest
import torch

from ltbench_methods.gcl import GCL, GCLStage1, cloud_amplitudes, gcl_loss
from test_methods_losses import CASES, COUNTS, batch, softmax_nll


def ref_gcl(cosine, labels, counts, margin, scale, noise_mul, noise, focal_gamma=None):
    """Each image's cross-entropy of s (cos_j - noise_mul |n_j| log(n_max/n_j) / log(n_max/n_min)
    - m [j == y]); the mean, or with focal_gamma the mean of (1 - p_y)^gamma times it."""
    gaps = [math.log(max(counts)) - math.log(n) for n in counts]
    losses = []
    for row, noise_row, y in zip(cosine.tolist(), noise.tolist(), labels.tolist()):
        z = [scale * (v - noise_mul * abs(e) * g / max(gaps) - (margin if j == y else 0.0))
             for j, (v, e, g) in enumerate(zip(row, noise_row, gaps))]
        nll = softmax_nll(z, y)
        losses.append(nll if focal_gamma is None else (1 - math.exp(-nll)) ** focal_gamma * nll)
    return sum(losses) / len(losses)


def the_noise(shape, seed):
    """What gcl_loss draws from a generator seeded with `seed`: N(0, 1/3) clipped to [-1, 1]."""
    return (torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) / 3).clamp(-1, 1)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("margin, scale, focal_gamma", [(0.0, 30.0, None), (0.1, 20.0, 1.0), (0.3, 10.0, 2.0)])
def test_gcl_loss_is_the_clouded_cosine_cross_entropy(case, margin, scale, focal_gamma):
    logits, labels = batch(**CASES[case], dtype=torch.float64)
    cosine = torch.tanh(logits)  # cosines in (-1, 1)
    noise = the_noise(cosine.shape, seed=7)
    got = gcl_loss(cosine, labels, torch.tensor(COUNTS, dtype=torch.float64), margin, scale, 0.5,
                   focal_gamma=focal_gamma, generator=torch.Generator().manual_seed(7)).item()
    want = ref_gcl(cosine, labels, COUNTS, margin, scale, 0.5, noise, focal_gamma)
    assert got == pytest.approx(want, rel=1e-9)


def test_the_noise_is_clipped_and_spares_the_most_frequent_class():
    # noise of sd 1/3 clipped at 1: amplitude noise_mul at most on the rarest class, none on the head
    assert cloud_amplitudes(torch.tensor([100.0, 10.0, 1.0])).tolist() == pytest.approx([0.0, 0.5, 1.0])
    cosine = torch.zeros(4000, 3, dtype=torch.float64)
    labels = torch.zeros(4000, dtype=torch.long)
    counts = torch.tensor([100.0, 10.0, 1.0], dtype=torch.float64)
    # at margin 0 and scale 1 the cross-entropy of the head label is log(1 + e^{-a1} + e^{-a2}) per image,
    # below log 3 (no noise) and above log(1 + 2 e^{-0.5}) (every draw at the clip)
    got = gcl_loss(cosine, labels, counts, 0.0, 1.0, 0.5, generator=torch.Generator().manual_seed(1)).item()
    assert math.log(1 + 2 * math.exp(-0.5)) < got < math.log(3)


def test_equal_counts_add_no_noise():
    logits, labels = batch(dtype=torch.float64)
    cosine = torch.tanh(logits)
    counts = torch.full((len(COUNTS),), 50.0, dtype=torch.float64)
    got = gcl_loss(cosine, labels, counts, 0.0, 30.0, 0.5, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(torch.nn.functional.cross_entropy(30 * cosine, labels).item(), rel=1e-12)


def test_the_same_generator_seed_gives_the_same_loss_and_another_seed_another():
    logits, labels = batch(dtype=torch.float64)
    cosine, counts = torch.tanh(logits), torch.tensor(COUNTS, dtype=torch.float64)

    def loss(seed):
        return gcl_loss(cosine, labels, counts, 0.0, 30.0, 0.5, generator=torch.Generator().manual_seed(seed)).item()

    assert loss(3) == loss(3) and loss(3) != loss(4)


def test_the_methods_use_the_stage_settings():
    first, second = GCLStage1.defaults(), GCL.defaults()
    assert (first["margin"], first["scale"], first["noise_mul"]) == (0.0, 30.0, 0.5)
    assert (second["gcl_margin"], second["gcl_scale"], second["gcl_focal_gamma"]) == (0.1, 20.0, 1.0)
