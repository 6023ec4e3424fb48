"""LADE's loss against a plain-float re-derivation of Hong et al.'s Eq. 15-16 and 18-20, with the
importance weight of the class regularised (hyperconnect/LADE loss/LADELoss.py), not of each
sample's label (the paper's Eq. 13)."""

import math

import pytest
import torch

from ltbench.method import Progress
from ltbench.registry import method as method_class
from ltbench_methods.lade import LADELoss, lader, prior_ce_loss
from test_methods_losses import CASES, COUNTS
from test_methods_losses import batch as losses_batch

STEP = Progress(epoch=0, epochs=200, step=0, steps=10)


def batch(n=16, seed=0, labels=None, scale=3.0):
    """test_methods_losses' batches, in float64: the re-derivation below is in plain floats."""
    return losses_batch(n, seed, labels, scale, dtype=torch.float64)


def ref_lader(logits, labels, counts, lam, weight_of="class"):
    """-sum_c p_s(c) [mean_{y_i=c} f_i[c] - L_c - lam L_c^2], L_c = log mean_i w f_i[c] with
    w = p_u / p_s of class c (weight_of="class", the original code) or of y_i (the paper)."""
    total_count = sum(counts)
    p_s = [n / total_count for n in counts]
    p_u = 1 / len(counts)
    rows, ys = logits.tolist(), labels.tolist()
    total = 0.0
    for c in range(len(counts)):
        own = [row[c] for row, y in zip(rows, ys) if y == c]
        first = sum(own) / len(own) if own else 0.0
        weights = [p_u / p_s[c] if weight_of == "class" else p_u / p_s[y] for y in ys]
        inner = math.log(sum(w * math.exp(row[c]) for w, row in zip(weights, rows)) / len(rows))
        total += p_s[c] * -(first - inner - lam * inner**2)
    return total


def ref_prior_ce(logits, labels, counts):
    total = 0.0
    for row, y in zip(logits.tolist(), labels.tolist()):
        z = [v + math.log(n / sum(counts)) for v, n in zip(row, counts)]
        total += -(z[y] - math.log(sum(math.exp(v) for v in z)))
    return total / len(labels)


def make(alpha=0.1, remine_lambda=0.01):
    hp = {**LADELoss.defaults(), "alpha": alpha, "remine_lambda": remine_lambda}
    return LADELoss(hp, COUNTS, feature_dim=8)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("lam", [0.0, 0.01, 0.5])
def test_lader_is_the_regularised_dv_bound_of_every_class(case, lam):
    logits, labels = batch(**CASES[case])
    got = lader(logits, labels, torch.tensor(COUNTS, dtype=torch.float64), lam)
    assert got.item() == pytest.approx(ref_lader(logits, labels, COUNTS, lam), rel=1e-6, abs=1e-6)  # the code's 1e-8 beside each count; a float32 prior


def test_lader_of_constant_logits_is_minus_the_kl_of_the_prior_from_uniform():
    # f = 0 everywhere: no first term, L_c = log(p_u / p_s(c)), so at lambda 0 the loss is
    # sum_c p_s(c) log(p_u / p_s(c)) = -KL(p_s || p_u); for counts 3:1 that is -0.130812
    counts = torch.tensor([3.0, 1.0], dtype=torch.float64)
    logits, labels = torch.zeros(4, 2, dtype=torch.float64), torch.tensor([0, 0, 0, 1])
    assert lader(logits, labels, counts, 0.0).item() == pytest.approx(
        -(0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)), abs=1e-6)
    assert lader(logits, labels, counts, 0.0).item() == pytest.approx(-0.1308120, abs=1e-6)
    # lambda adds sum_c p_s(c) L_c^2
    squares = 0.75 * math.log(0.5 / 0.75) ** 2 + 0.25 * math.log(0.5 / 0.25) ** 2
    assert lader(logits, labels, counts, 0.1).item() == pytest.approx(-0.1308120 + 0.1 * squares, abs=1e-6)


def test_the_class_not_the_sample_sets_the_importance_weight():
    # LADELoss.py L47 shifts column c by log p_u(c) - log p_s(c); the paper's Eq. 13 weighs by
    # each sample's label: on a mixed batch the two differ, and the code's is what is computed
    logits, labels = batch()
    got = lader(logits, labels, torch.tensor(COUNTS, dtype=torch.float64), 0.01).item()
    paper = ref_lader(logits, labels, COUNTS, 0.01, weight_of="sample")
    assert abs(got - paper) > 1e-3


@pytest.mark.parametrize("case", CASES)
def test_the_method_adds_alpha_times_lader_to_the_prior_adjusted_ce(case):
    logits, labels = batch(**CASES[case])
    got = make(alpha=0.1, remine_lambda=0.01).criterion(logits.float(), labels, STEP).item()
    want = ref_prior_ce(logits, labels, COUNTS) + 0.1 * ref_lader(logits, labels, COUNTS, 0.01)
    assert got == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_at_alpha_zero_it_is_balanced_softmax():
    # the paper, after Eq. 20: Balanced Softmax is LADE with alpha = 0
    logits, labels = batch()
    balanced = method_class("balanced_softmax")(method_class("balanced_softmax").defaults(), COUNTS, 8)
    assert make(alpha=0.0).criterion(logits.float(), labels, STEP).item() == pytest.approx(
        balanced.criterion(logits.float(), labels, STEP).item(), rel=1e-6)
    assert prior_ce_loss(logits, labels, torch.tensor(COUNTS, dtype=torch.float64)).item() == pytest.approx(
        ref_prior_ce(logits, labels, COUNTS), rel=1e-6)


def test_evaluation_uses_the_disentangled_logits_unchanged():
    # Eq. 17 with a uniform p_t adds the same log(1/C) to every logit (run_networks.py
    # L594-599): the prediction is argmax f(x), with no log p_s subtracted a second time
    method = make()
    features = torch.randn(6, 8)
    assert torch.equal(method.logits(features), method.classifier(features))


def test_dataset_defaults_follow_the_papers_table_7():
    from ltbench.registry import dataset
    values = {name: LADELoss.defaults(dataset(name)) for name in ["cifar100_lt", "imagenet_lt", "inat2018"]}
    assert [(v["alpha"], v["remine_lambda"]) for v in values.values()] == [(0.1, 0.01), (0.05, 0.5), (0.05, 0.5)]


def test_published_figures_as_hong_et_al_print_them():
    from ltbench.report.reference import load_published
    published = load_published()
    lade = published[published["method"] == "lade"]
    assert lade["source"].str.startswith("Hong et al. 2021 (CVPR, arXiv:2012.00321v2), Table ").all()
    assert lade["confirmed"].all()
    cifar = lade[lade["dataset"] == "cifar100_lt"].set_index("imbalance_factor")
    assert cifar["top1"].to_dict() == {100: 45.4, 50: 50.5, 10: 61.7}
    # Table 7: alpha 0.1 at IB 100, 0.01 at IB 50 and 10; lambda 0.01 throughout
    assert {f: (p["alpha"], p["remine_lambda"]) for f, p in cifar["params"].items()} == {
        100: (0.1, 0.01), 50: (0.01, 0.01), 10: (0.01, 0.01)}
    others = lade[lade["dataset"] != "cifar100_lt"]
    natural = sorted(zip(others["dataset"], others["epochs"], others["top1"]))
    assert natural == [("imagenet_lt", "180", 53.0), ("imagenet_lt", "90", 51.9), ("inat2018", "200", 70.0),
                       ("places_lt", "30", 38.8)]
