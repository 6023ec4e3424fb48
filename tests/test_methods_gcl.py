"""GCL's loss against a per-element re-derivation of Keke921/GCLLoss's GCLLoss (losses.py
L53-83) on the same Gaussian draws, from a seeded generator; on a mixed batch, against its
mixup_criterion (utils.py L139-140), one draw of the noise per criterion call."""

import math

import pytest
import torch

from ltbench import registry
from ltbench.errors import UserError
from ltbench.method import Batch, Draw, Progress
from ltbench.sweep import resolve, route_overrides
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


FEATURES = 6
PROGRESS = Progress(epoch=0, epochs=1, step=0, steps=1)


def mixed_batch(seed=0, n=12, lam=0.3):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(len(COUNTS), (n,), generator=g)
    partner = torch.randperm(n, generator=g)
    return Batch(views=[torch.randn(n, FEATURES, generator=g)], labels=labels, labels_b=labels[partner], lam=lam)


def two_draws(shape, seed):
    """The noise of two successive gcl_loss calls after torch.manual_seed(seed): the first
    criterion's (the images' labels), then the second's (the partners')."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(shape, generator=g) / 3).clamp(-1, 1) for _ in range(2)]


@pytest.mark.parametrize("stage, hp, focal_gamma", [
    (GCLStage1, {"margin": 0.0, "scale": 30.0, "noise_mul": 0.5}, None),
    (GCL, {"gcl_margin": 0.1, "gcl_scale": 20.0, "gcl_noise_mul": 0.5, "gcl_focal_gamma": 1.0}, 1.0),
])
def test_a_mixed_batch_gives_the_lambda_weighted_gcl_loss_with_a_cloud_per_label_set(stage, hp, focal_gamma):
    method = stage({**stage.defaults(), **hp}, COUNTS, FEATURES)
    batch = mixed_batch()
    margin, scale, noise_mul = list(hp.values())[:3]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        got = method.loss(torch.nn.Identity(), {"main": batch}, PROGRESS).item()
    cosine = method.logits(batch.views[0]).detach()
    first, second = two_draws(cosine.shape, 11)
    want = (0.3 * ref_gcl(cosine, batch.labels, COUNTS, margin, scale, noise_mul, first, focal_gamma)
            + 0.7 * ref_gcl(cosine, batch.labels_b, COUNTS, margin, scale, noise_mul, second, focal_gamma))
    assert got == pytest.approx(want, rel=1e-5)
    # one cloud for both label sets would be another loss: the draws are the criterion calls'
    shared = (0.3 * ref_gcl(cosine, batch.labels, COUNTS, margin, scale, noise_mul, first, focal_gamma)
              + 0.7 * ref_gcl(cosine, batch.labels_b, COUNTS, margin, scale, noise_mul, first, focal_gamma))
    assert got != pytest.approx(shared, rel=1e-5)


def test_an_unmixed_batch_gives_the_plain_gcl_loss():
    method = GCL(GCL.defaults(), COUNTS, FEATURES)
    batch = mixed_batch()
    batch.labels_b, batch.lam = None, 1.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        got = method.loss(torch.nn.Identity(), {"main": batch}, PROGRESS).item()
    cosine = method.logits(batch.views[0]).detach()
    want = ref_gcl(cosine, batch.labels, COUNTS, 0.1, 20.0, 0.5, two_draws(cosine.shape, 5)[0], 1.0)
    assert got == pytest.approx(want, rel=1e-5)


def test_both_stages_mix_by_default_and_batch_mix_none_trains_on_plain_batches():
    # cifar_train_backbone.py L39 and cifar_train_classifier.py L47: --mixup default True, alpha 1
    spec = resolve("gcl", "cifar10_lt", 100, 0, "paper")
    first, second = spec.hyperparameters["gcl_stage1"], spec.hyperparameters["gcl"]
    assert GCLStage1(first, COUNTS, FEATURES).draws == {"main": Draw(mix="mixup", mix_alpha=1.0)}
    assert GCL(second, COUNTS, FEATURES).draws == {"main": Draw(sampler="class_balanced", mix="mixup", mix_alpha=1.0)}
    plain = resolve("gcl", "cifar10_lt", 100, 0, "paper",
                    route_overrides(["gcl"], {"batch_mix": "none", "gcl_batch_mix": "none"})["gcl"])
    assert GCLStage1(plain.hyperparameters["gcl_stage1"], COUNTS, FEATURES).draws == {"main": Draw()}
    assert GCL(plain.hyperparameters["gcl"], COUNTS, FEATURES).draws == {"main": Draw(sampler="class_balanced")}


def test_batch_mix_is_stage_1s_and_gcl_batch_mix_stage_2s():
    routed = route_overrides(["gcl"], {"batch_mix": "none", "gcl.mix_alpha": "0.5", "gcl_mix_alpha": "0.2"})["gcl"]
    assert routed == {("gcl_stage1", "batch_mix"): "none", ("gcl_stage1", "mix_alpha"): "0.5",
                      ("gcl", "gcl_mix_alpha"): "0.2"}
    alone = route_overrides(["gcl_stage1"], {"gcl_stage1.batch_mix": "none"})["gcl_stage1"]
    assert alone == {("gcl_stage1", "batch_mix"): "none"}
    with pytest.raises(UserError, match="gcl_batch_mix") as refused:
        resolve("gcl", "cifar10_lt", 100, 0, "paper", route_overrides(["gcl"], {"gcl_batch_mix": "blend"})["gcl"])
    assert "cutmix" in str(refused.value) + (refused.value.hint or "")


def test_places_lt_mixes_stage_1_with_alpha_0_2():
    # Places-LT/pla_train_backbone.py L294: mixup_data(input, target, alpha=0.2); stage 2 keeps 1.0
    assert GCLStage1.defaults(registry.dataset("places_lt"))["mix_alpha"] == 0.2
    assert GCL.defaults(registry.dataset("places_lt"))["gcl_mix_alpha"] == 1.0
