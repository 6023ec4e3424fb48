"""KCL's k positives and loss on fixed tensors, against the formula written out anchor by anchor
(Kang et al. 2021; LTH14/targeted-supcon moco/builder.py L391-428)."""

import math

import pytest
import torch
import torch.nn.functional as F

from ltbench_methods.kcl import k_positive_contrastive_loss, k_positive_mask
from ltbench_methods.sc_hybrid import supervised_contrastive_loss

# 6 images in two views (rows 0-5 view 1, 6-11 view 2): class 0 has four images, class 1 two
LABELS = torch.tensor([0, 0, 1, 0, 1, 0]).repeat(2)
N = 6


def expected_positives(labels: torch.Tensor, k: int, keys: torch.Tensor) -> list[set[int]]:
    """Anchor i's other view, and the k candidates of its class (other images, either view)
    with the largest keys."""
    n = len(labels)
    out = []
    for i in range(n):
        view = {j for j in range(n) if j != i and j % N == i % N}
        candidates = [j for j in range(n) if labels[j] == labels[i] and j % N != i % N]
        candidates.sort(key=lambda j: -float(keys[i, j]))
        out.append(view | set(candidates[:k]))
    return out


@pytest.mark.parametrize("k", [0, 1, 2, 6, 100])
def test_k_positives_are_the_view_and_k_drawn_from_the_class(k):
    mask = k_positive_mask(LABELS, 2, k, torch.Generator().manual_seed(3))
    keys = torch.rand((12, 12), generator=torch.Generator().manual_seed(3))
    want = expected_positives(LABELS, k, keys) if k > 0 else [{(i + N) % 12} for i in range(12)]
    assert [set(torch.nonzero(row).flatten().tolist()) for row in mask] == want
    for i, row in enumerate(mask):
        class_size = 2 * int((LABELS[:N] == LABELS[i]).sum()) - 2  # both views of the other images
        assert int(row.sum()) == 1 + min(k, class_size)


def test_k_positives_follow_the_generator():
    draws = [k_positive_mask(LABELS, 2, 2, torch.Generator().manual_seed(seed)) for seed in (0, 0, 1)]
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], draws[2])


def loss_by_hand(z, positives, tau, targets=None, target_of=None):
    """-1 / |P_i| sum_p log(exp(z_i.z_p / tau) / Z_i), Z_i over a != i and every target; |P_i|
    counts the target; returns the class term and the target term, each a mean over anchors."""
    n = len(z)
    class_terms, target_terms = [], []
    for i in range(n):
        others = [math.exp(float(z[i] @ z[a]) / tau) for a in range(n) if a != i]
        to_targets = [math.exp(float(z[i] @ t) / tau) for t in targets] if targets is not None else []
        log_z = math.log(sum(others) + sum(to_targets))
        chosen = [p for p in range(n) if positives[i][p]]
        count = len(chosen) + (1 if target_of is not None else 0)
        class_terms.append(-sum(float(z[i] @ z[p]) / tau - log_z for p in chosen) / count)
        if target_of is not None:
            target_terms.append(-(float(z[i] @ targets[target_of[i]]) / tau - log_z) / count)
    mean = sum(class_terms) / n
    return mean, (sum(target_terms) / n if target_terms else 0.0)


def embeddings(seed=0, n=12, dim=5):
    return F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=1)


@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_kcl_loss_matches_the_formula_with_k_below_the_class_size(tau):
    z = embeddings()
    positives = k_positive_mask(LABELS, 2, 2, torch.Generator().manual_seed(7))
    class_term, target_term = k_positive_contrastive_loss(z, positives, tau)
    want, _ = loss_by_hand(z, positives.tolist(), tau)
    assert class_term.item() == pytest.approx(want, rel=1e-10)
    assert target_term.item() == 0.0


def test_kcl_with_every_positive_is_supcon():
    z = embeddings(1)
    positives = k_positive_mask(LABELS, 2, 100)
    class_term, _ = k_positive_contrastive_loss(z, positives, 0.1)
    assert class_term.item() == pytest.approx(supervised_contrastive_loss(z, LABELS, 0.1).item(), rel=1e-10)


def test_the_target_term_matches_the_formula():
    z = embeddings(2)
    targets = F.normalize(torch.randn(2, 5, generator=torch.Generator().manual_seed(9), dtype=torch.float64), dim=1)
    assigned = torch.tensor([1, 0])  # class 0 owns target 1
    positives = k_positive_mask(LABELS, 2, 2, torch.Generator().manual_seed(5))
    target_positive = F.one_hot(assigned[LABELS], 2).bool()
    class_term, target_term = k_positive_contrastive_loss(z, positives, 0.2, targets, target_positive)
    want_class, want_target = loss_by_hand(z, positives.tolist(), 0.2, targets, assigned[LABELS].tolist())
    assert class_term.item() == pytest.approx(want_class, rel=1e-10)
    assert target_term.item() == pytest.approx(want_target, rel=1e-10)
