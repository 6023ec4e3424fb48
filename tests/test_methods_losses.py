"""Every method's loss against a slow, per-sample re-derivation of its paper's formula."""

import math

import pytest
import torch

from ltbench.method import Progress
from ltbench_methods.balanced_softmax import BalancedSoftmax, balanced_softmax_loss
from ltbench_methods.cb_focal import ClassBalancedFocal, cb_focal_loss
from ltbench_methods.ce_drw import CrossEntropyDRW
from ltbench_methods.common import NormedLinear, drw_start_epoch, drw_weights, effective_number_weights, log_prior
from ltbench_methods.focal import focal_loss
from ltbench_methods.ldam_drw import LDAM, LDAMDRW, LDAMLoss
from ltbench_methods.logit_adjust import LogitAdjustedLoss, PostHocLogitAdjustment, logit_adjusted_loss
from ltbench_methods.lws import LearnableWeightScaling
from ltbench_methods.tau_norm import TauNormalisation

# one class with a single image: margins, priors and weights are at their extremes there
COUNTS = [500, 200, 60, 9, 1]
C = len(COUNTS)


def batch(n=16, seed=0, labels=None, scale=3.0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, C, generator=gen, dtype=dtype) * scale
    if labels is None:
        labels = torch.randint(0, C, (n,), generator=gen)
    return logits, labels


CASES = {
    "random": dict(),
    "one class in the batch": dict(labels=torch.full((16,), 2)),
    "only the one-image class": dict(labels=torch.full((16,), 4)),
    "one sample": dict(n=1, labels=torch.tensor([4])),
}


def softmax_nll(z, y):
    """-log softmax(z)_y for one sample, as plain float arithmetic."""
    top = max(z)
    return -(z[y] - top - math.log(sum(math.exp(v - top) for v in z)))


def sigmoid(v):
    return 1 / (1 + math.exp(-v))


def ref_effective_weights(counts, beta):
    raw = [(1 - beta) / (1 - beta**n) for n in counts]
    return [w / sum(raw) * len(counts) for w in raw]


def weighted_mean(losses, weights):
    return sum(w * l for w, l in zip(weights, losses)) / sum(weights)


def ref_ldam(cos, labels, counts, max_margin, s, class_weights=None):
    raw = [n ** -0.25 for n in counts]
    margins = [m * max_margin / max(raw) for m in raw]
    losses, weights = [], []
    for row, y in zip(cos.tolist(), labels.tolist()):
        z = [s * (c - (margins[j] if j == y else 0.0)) for j, c in enumerate(row)]
        losses.append(softmax_nll(z, y))
        weights.append(1.0 if class_weights is None else class_weights[y])
    return weighted_mean(losses, weights)


def ref_cb_focal(logits, labels, counts, beta, gamma):
    w = ref_effective_weights(counts, beta)
    total = 0.0
    for row, y in zip(logits.tolist(), labels.tolist()):
        for j, z in enumerate(row):
            p_t = sigmoid(z) if j == y else 1 - sigmoid(z)
            total += w[y] * -((1 - p_t) ** gamma) * math.log(p_t)
    return total / len(labels)


def progress(epoch, epochs=200):
    return Progress(epoch=epoch, epochs=epochs, step=0, steps=1)


def method(cls, **hp):
    return cls({**cls.defaults(), **hp}, COUNTS, feature_dim=8)


# ---------------------------------------------------------------- shared pieces


def test_effective_number_weights():
    counts = torch.tensor(COUNTS)
    for beta in (0.9, 0.999, 0.9999):
        got = effective_number_weights(counts, beta)
        assert got.tolist() == pytest.approx(ref_effective_weights(COUNTS, beta), rel=1e-5)
        assert got.sum().item() == pytest.approx(C, rel=1e-6)
        assert torch.all(got[:-1] <= got[1:])  # rarer classes weigh more
    assert effective_number_weights(counts, 0.0).tolist() == [1.0] * C


def test_drw_is_uniform_until_80_percent_of_the_epochs():
    counts = torch.tensor(COUNTS)
    assert drw_start_epoch(200, 0.8) == 160  # LDAM-DRW: `idx = epoch // 160`
    assert drw_start_epoch(12, 0.8) == 10  # same rounding as the trainer's lr milestones
    assert drw_weights(counts, 0.9999, 159, 200, 0.8).tolist() == [1.0] * C
    late = drw_weights(counts, 0.9999, 160, 200, 0.8)
    assert late.tolist() == pytest.approx(ref_effective_weights(COUNTS, 0.9999), rel=1e-5)


def test_normed_linear_is_a_cosine_with_unit_init_columns():
    torch.manual_seed(0)
    layer = NormedLinear(8, C)
    assert torch.allclose(layer.weight.norm(dim=0), torch.ones(C), atol=1e-5)
    x = torch.randn(6, 8)
    w = layer.weight.detach()
    ref = torch.tensor([[float(x[i] @ w[:, j] / (x[i].norm() * w[:, j].norm())) for j in range(C)] for i in range(6)])
    assert torch.allclose(layer(x), ref, atol=1e-6)


def test_normed_linear_stays_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    layer, x = NormedLinear(64, C), torch.randn(32, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = layer(x.bfloat16())
    assert low.dtype == torch.float32
    # only the features' own bf16 rounding is left: far below what s = 30 would amplify
    assert (low - layer(x)).abs().max() < 4e-3


# ---------------------------------------------------------------- losses


@pytest.mark.parametrize("case", CASES)
def test_ldam_loss(case):
    cos, labels = batch(**CASES[case], scale=0.3)
    cos = cos.clamp(-1, 1)
    loss = LDAMLoss(torch.tensor(COUNTS), max_margin=0.5, scale=30.0)
    assert loss.margins.max().item() == pytest.approx(0.5) and loss.margins.argmax().item() == C - 1
    assert loss(cos, labels).item() == pytest.approx(ref_ldam(cos, labels, COUNTS, 0.5, 30.0), rel=1e-5)
    weights = ref_effective_weights(COUNTS, 0.9999)
    got = loss(cos, labels, torch.tensor(weights, dtype=torch.float)).item()
    assert got == pytest.approx(ref_ldam(cos, labels, COUNTS, 0.5, 30.0, weights), rel=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_ldam_drw_defers_the_weights(case):
    cos, labels = batch(**CASES[case], scale=0.3)
    cos = cos.clamp(-1, 1)
    plain, drw = method(LDAM), method(LDAMDRW)
    early = ref_ldam(cos, labels, COUNTS, 0.5, 30.0)
    late = ref_ldam(cos, labels, COUNTS, 0.5, 30.0, ref_effective_weights(COUNTS, 0.9999))
    assert plain.criterion(cos, labels, progress(199)).item() == pytest.approx(early, rel=1e-5)
    assert drw.criterion(cos, labels, progress(159)).item() == pytest.approx(early, rel=1e-5)
    assert drw.criterion(cos, labels, progress(160)).item() == pytest.approx(late, rel=1e-5)
    assert isinstance(drw.classifier, NormedLinear)


@pytest.mark.parametrize("case", CASES)
def test_ce_drw(case):
    logits, labels = batch(**CASES[case])
    m = method(CrossEntropyDRW)
    nll = [softmax_nll(z, y) for z, y in zip(logits.tolist(), labels.tolist())]
    w = ref_effective_weights(COUNTS, 0.9999)
    assert m.criterion(logits, labels, progress(10)).item() == pytest.approx(sum(nll) / len(nll), rel=1e-5)
    late = weighted_mean(nll, [w[y] for y in labels.tolist()])
    assert m.criterion(logits, labels, progress(180)).item() == pytest.approx(late, rel=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_balanced_softmax(case):
    logits, labels = batch(**CASES[case])
    losses = []
    for z, y in zip(logits.tolist(), labels.tolist()):
        # phi_y = n_y exp(eta_y) / sum_j n_j exp(eta_j)
        losses.append(-math.log(COUNTS[y] * math.exp(z[y]) / sum(n * math.exp(v) for n, v in zip(COUNTS, z))))
    ref = sum(losses) / len(losses)
    assert balanced_softmax_loss(logits, labels, torch.tensor(COUNTS, dtype=torch.float)).item() == pytest.approx(ref, rel=1e-5)
    assert method(BalancedSoftmax).criterion(logits, labels, progress(0)).item() == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("tau", [1.0, 0.5, 2.0])
def test_logit_adjusted_loss(case, tau):
    logits, labels = batch(**CASES[case])
    prior = [n / sum(COUNTS) for n in COUNTS]
    ref = sum(softmax_nll([v + tau * math.log(p) for v, p in zip(z, prior)], y)
              for z, y in zip(logits.tolist(), labels.tolist())) / len(labels)
    counts = torch.tensor(COUNTS, dtype=torch.float)
    assert logit_adjusted_loss(logits, labels, counts, tau).item() == pytest.approx(ref, rel=1e-5)
    m = method(LogitAdjustedLoss, tau=tau)
    assert m.criterion(logits, labels, progress(0)).item() == pytest.approx(ref, rel=1e-5)
    if tau == 1.0:  # log pi and log n differ by a constant that softmax ignores
        assert balanced_softmax_loss(logits, labels, counts).item() == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
def test_cb_focal_loss(case, gamma):
    logits, labels = batch(**CASES[case])
    weights = effective_number_weights(torch.tensor(COUNTS), 0.9999)
    ref = ref_cb_focal(logits, labels, COUNTS, 0.9999, gamma)
    assert cb_focal_loss(logits, labels, weights, gamma).item() == pytest.approx(ref, rel=1e-5)
    m = method(ClassBalancedFocal, gamma=gamma)
    assert m.criterion(logits, labels, progress(0)).item() == pytest.approx(ref, rel=1e-5)


def test_cb_focal_starts_from_probability_one_over_c():
    m = method(ClassBalancedFocal)
    assert torch.sigmoid(m.classifier.bias).tolist() == pytest.approx([1 / C] * C, rel=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_focal_loss(case):
    logits, labels = batch(**CASES[case])
    ref = 0.0
    for z, y in zip(logits.tolist(), labels.tolist()):
        p_t = math.exp(-softmax_nll(z, y))
        ref += -((1 - p_t) ** 1.0) * math.log(p_t)
    assert focal_loss(logits, labels, 1.0).item() == pytest.approx(ref / len(labels), rel=1e-5)


LOSSES_ON_LOGITS = {
    "ce_drw": lambda logits, labels: method(CrossEntropyDRW).criterion(logits, labels, progress(199)),
    "ldam_drw": lambda logits, labels: method(LDAMDRW).criterion(torch.tanh(logits / 4), labels, progress(199)),
    "balanced_softmax": lambda logits, labels: method(BalancedSoftmax).criterion(logits, labels, progress(0)),
    "logit_adjust": lambda logits, labels: method(LogitAdjustedLoss).criterion(logits, labels, progress(0)),
    "cb_focal": lambda logits, labels: method(ClassBalancedFocal).criterion(logits, labels, progress(0)),
}


@pytest.mark.parametrize("name", LOSSES_ON_LOGITS)
def test_bf16_logits_give_the_fp32_loss_within_tolerance(name):
    """The trainer runs the network in bf16 and hands the loss float32 logits: the loss may
    move by the rounding of its inputs and no more."""
    logits, labels = batch(n=64)
    loss = LOSSES_ON_LOGITS[name]
    full, rounded = loss(logits, labels).item(), loss(logits.bfloat16().float(), labels).item()
    assert rounded == pytest.approx(full, rel=2e-2, abs=1e-3)
    assert math.isfinite(loss(logits.bfloat16(), labels).float().item())


# ---------------------------------------------------------------- heads of the decoupled methods


def stage1_classifier():
    torch.manual_seed(1)
    layer = torch.nn.Linear(8, C)
    with torch.no_grad():
        layer.weight.mul_(torch.tensor([4.0, 2.0, 1.0, 0.5, 0.25])[:, None])  # head classes grow larger norms
    return layer


def test_tau_norm_scores_with_normalised_weights_and_no_bias():
    m = method(TauNormalisation)
    stage1 = type("Stage1", (), {"classifier": stage1_classifier()})()
    m.load_stage1(stage1)
    x = torch.randn(5, 8)
    w = stage1.classifier.weight.detach()
    for tau in (0.0, 1.0, 1.7):
        m.tau.fill_(tau)
        ref = torch.tensor([[float(x[i] @ w[j]) / float(w[j].norm()) ** tau for j in range(C)] for i in range(5)])
        assert torch.allclose(m.logits(x), ref, atol=1e-5)
    m.tau.fill_(1.0)
    assert torch.allclose(m.normalised_weights(1.0).norm(dim=1), torch.ones(C), atol=1e-6)


def test_lws_scales_the_frozen_stage1_logits():
    m = method(LearnableWeightScaling)
    stage1 = type("Stage1", (), {"classifier": stage1_classifier()})()
    m.load_stage1(stage1)
    with torch.no_grad():
        m.scales.copy_(torch.tensor([0.5, 1.0, 1.5, 2.0, 3.0]))
    x = torch.randn(5, 8)
    w, b = stage1.classifier.weight.detach(), stage1.classifier.bias.detach()
    ref = torch.tensor([[float(m.scales[j].detach()) * (float(x[i] @ w[j]) + float(b[j])) for j in range(C)] for i in range(5)])
    assert torch.allclose(m.logits(x), ref, atol=1e-5)
    assert [n for n, p in m.named_parameters() if p.requires_grad] == ["scales"]


def test_posthoc_logit_adjustment_subtracts_tau_log_prior():
    m = method(PostHocLogitAdjustment, tau=1.5)
    stage1 = type("Stage1", (), {"classifier": stage1_classifier()})()
    m.load_stage1(stage1)
    x = torch.randn(5, 8)
    plain = stage1.classifier(x).detach()
    prior = [n / sum(COUNTS) for n in COUNTS]
    ref = torch.tensor([[float(plain[i, j]) - 1.5 * math.log(prior[j]) for j in range(C)] for i in range(5)])
    assert torch.allclose(m.logits(x), ref, atol=1e-5)
    assert torch.allclose(log_prior(torch.tensor(COUNTS)).exp().sum(), torch.tensor(1.0))
