"""De-confound-TDE against plain-float re-derivations of Tang et al.'s Eq. 7 (the multi-head
causal-norm logits) and Eq. 8 (the counterfactual removal of the head direction), and its
moving average of the training features as run_networks.py accumulates it."""

import dataclasses
import math

import pytest
import torch
from torch import nn

from ltbench.errors import UserError
from ltbench.method import Batch, Progress
from ltbench.registry import dataset
from ltbench.testing import _through_bytes, toy_data, toy_spec, toy_trainer
from ltbench_methods.tde import TDEClassifier, causal_norm_logits, moving_average_decay

COUNTS = [50, 20, 5]


def fixed(seed=0, n=4, classes=3, dim=6):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, dim, generator=g, dtype=torch.float64).relu() + 0.05  # post-ReLU, no zero head
    weight = torch.randn(classes, dim, generator=g, dtype=torch.float64)
    direction = torch.rand(dim, generator=g, dtype=torch.float64) * 3
    return features, weight, direction


def assert_close(got, want):
    torch.testing.assert_close(got.double(), torch.tensor(want, dtype=torch.float64), rtol=1e-5, atol=1e-6)


def norm(v):
    return math.sqrt(sum(a * a for a in v))


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def ref_tde(features, weight, tau, gamma, heads, direction=None, alpha=0.0):
    """Eq. 8 (Eq. 7 where alpha is 0): tau / K sum_k [w_k.x_k / ((|w_k| + gamma)|x_k|)
    - alpha cos(x_k, d_k) w_k.d_k / ((|w_k| + gamma)|d_k|)], one plain float at a time."""
    dim = len(features[0]) // heads
    out = []
    for x in features.tolist():
        row = []
        for w in weight.tolist():
            total = 0.0
            for k in range(heads):
                xk, wk = x[k * dim:(k + 1) * dim], w[k * dim:(k + 1) * dim]
                total += dot(wk, xk) / ((norm(wk) + gamma) * norm(xk))
                if alpha:
                    dk = direction.tolist()[k * dim:(k + 1) * dim]
                    cos = dot(xk, dk) / (norm(xk) * norm(dk))
                    total -= alpha * cos * dot(wk, dk) / ((norm(wk) + gamma) * norm(dk))
            row.append(tau / heads * total)
        out.append(row)
    return out


@pytest.mark.parametrize("heads", [1, 2, 3])
@pytest.mark.parametrize("tau, gamma", [(16.0, 1 / 32), (10.0, 0.0), (4.0, 0.5)])
def test_causal_norm_logits_are_eq_7(heads, tau, gamma):
    features, weight, _ = fixed()
    got = causal_norm_logits(features, weight, tau, gamma, heads)
    assert_close(got, ref_tde(features, weight, tau, gamma, heads))


@pytest.mark.parametrize("heads", [1, 2, 3])
@pytest.mark.parametrize("alpha", [1.0, 1.5, 3.0])
def test_the_counterfactual_removal_is_eq_8(heads, alpha):
    features, weight, direction = fixed(seed=1)
    got = causal_norm_logits(features, weight, 16.0, 1 / 32, heads, direction, alpha)
    want = ref_tde(features, weight, 16.0, 1 / 32, heads, direction, alpha)
    assert_close(got, want)
    plain = ref_tde(features, weight, 16.0, 1 / 32, heads)
    assert not torch.allclose(got.double(), torch.tensor(plain, dtype=torch.float64), rtol=1e-3)  # the step changes them


def test_one_head_without_gamma_is_a_scaled_cosine_classifier():
    features, weight, _ = fixed(seed=2)
    cosine = nn.functional.normalize(features, dim=1) @ nn.functional.normalize(weight, dim=1).T
    assert_close(causal_norm_logits(features, weight, 16.0, 0.0, 1), (16.0 * cosine).tolist())


def test_a_zero_direction_or_alpha_leaves_the_eq_7_logits():
    features, weight, direction = fixed(seed=3)
    eq7 = causal_norm_logits(features, weight, 16.0, 1 / 32, 2)
    assert torch.equal(causal_norm_logits(features, weight, 16.0, 1 / 32, 2, direction, 0.0), eq7)
    assert torch.allclose(causal_norm_logits(features, weight, 16.0, 1 / 32, 2, torch.zeros(6), 3.0), eq7)


def test_under_bf16_autocast_the_logits_stay_fp32():
    features, weight, direction = (t.float() for t in fixed(seed=4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = causal_norm_logits(features, weight, 16.0, 1 / 32, 2, direction, 3.0)
    assert got.dtype == torch.float32
    assert_close(got, ref_tde(features, weight, 16.0, 1 / 32, 2, direction, 3.0))


def test_the_decay_follows_the_lr_only_where_asked():
    # run_networks.py L306-309: mu = 1 - (1 - 0.9) min(50 lr, 1)
    assert moving_average_decay(0.9, 0.2, follows_lr=False) == 0.9
    assert moving_average_decay(0.9, 0.2, follows_lr=True) == pytest.approx(0.9)
    assert moving_average_decay(0.9, 0.01, follows_lr=True) == pytest.approx(1 - 0.1 * 0.5)
    assert moving_average_decay(0.9, 0.0, follows_lr=True) == 1.0
    assert moving_average_decay(0.9, None, follows_lr=True) == 0.9


def make(**hp):
    return TDEClassifier({**TDEClassifier.defaults(), **hp}, COUNTS, feature_dim=6)


def test_training_accumulates_the_batch_means_and_evaluation_removes_their_direction():
    method = make(mu=0.9, mu_follows_lr=True, alpha=1.5)
    backbone = nn.Flatten()  # the "features" are the images themselves
    first, _, _ = fixed(seed=5)
    second, _, _ = fixed(seed=6)
    labels = torch.tensor([0, 1, 2, 0])
    losses = []
    for images, lr in ((first, 0.2), (second, 0.01)):
        batches = {"main": Batch(views=[images.float()], labels=labels)}
        losses.append(method.loss(backbone, batches, Progress(0, 1, 0, 2, lr=lr)))
    # x_1 = mean(first); x_2 = mu_2 x_1 + mean(second) with mu_2 = 1 - 0.1 * min(50 * 0.01, 1)
    want = [0.95 * a + b for a, b in zip(first.mean(0).tolist(), second.mean(0).tolist())]
    assert method.head_direction.value.tolist() == pytest.approx(want, rel=1e-6)
    # the loss is cross-entropy on Eq. 7, the counterfactual left to evaluation
    eq7 = torch.tensor(ref_tde(second, method.weight.detach().double(), 16.0, 1 / 32, 2))
    assert losses[1].item() == pytest.approx(nn.functional.cross_entropy(eq7, labels).item(), rel=1e-5)
    eq8 = ref_tde(first, method.weight.detach().double(), 16.0, 1 / 32, 2, method.head_direction.value.double(), 1.5)
    assert_close(method.logits(first.float()), eq8)


def test_the_feature_must_split_into_equal_heads():
    with pytest.raises(UserError, match="num_head=4 equal heads"):
        make(num_head=4)


def test_dataset_defaults_follow_the_paper_and_the_configs():
    values = {name: TDEClassifier.defaults(dataset(name)) for name in
              ["cifar10_lt", "cifar100_lt", "imagenet_lt", "fashion_mnist_lt"]}
    assert {name: (v["alpha"], v["alpha_grid"], v["mu_follows_lr"]) for name, v in values.items()} == {
        "cifar10_lt": (1.0, None, False), "cifar100_lt": (1.5, None, False), "imagenet_lt": (3.0, None, True),
        "fashion_mnist_lt": (1.0, [0.25 * i for i in range(13)], False)}  # no published alpha: chosen
    assert {(v["tau"], v["gamma"], v["num_head"], v["mu"]) for v in values.values()} == {(16.0, 0.03125, 2, 0.9)}
    imagenet = TDEClassifier.protocol_defaults(dataset("imagenet_lt"))
    assert (imagenet["epochs"], imagenet["batch_size"], imagenet["lr"], imagenet["schedule"]) == (90, 512, 0.2, "cosine")


def test_the_moving_average_is_checkpointed_and_survives_resume():
    data, spec, saved = toy_data(), toy_spec("tde"), []
    whole = toy_trainer(spec, data, save_checkpoint=lambda state: saved.append(_through_bytes(state)))
    whole.fit()
    after_first = saved[0]["method"]["head_direction.value"]
    assert after_first.abs().sum() > 0
    resumed = toy_trainer(spec, data)
    assert resumed.method.head_direction.value.abs().sum() == 0
    resumed.load_state_dict(saved[0])
    assert torch.equal(resumed.method.head_direction.value, after_first)
    resumed.fit()
    assert torch.equal(resumed.method.head_direction.value, whole.method.head_direction.value)
    assert not torch.equal(whole.method.head_direction.value, after_first)  # the second epoch moved it on


def test_published_figures_as_tang_et_al_print_them():
    from ltbench.report.reference import load_published
    published = load_published()
    tde = published[published["method"] == "tde"]
    assert tde["source"].str.startswith("Tang et al. 2020 (NeurIPS, arXiv:2009.12991v5), Table ").all()
    assert tde["confirmed"].all()
    with_tde = tde[tde["params"].map(lambda p: p.get("alpha") != 0.0)]
    alone = tde[tde["params"].map(lambda p: p.get("alpha") == 0.0)]

    def cells(rows):
        return sorted((d, None if math.isnan(f) else int(f), top1)
                      for d, f, top1 in zip(rows["dataset"], rows["imbalance_factor"], rows["top1"]))

    # Table 3 (CIFAR, ResNet-32) and Table 2 (ImageNet-LT, ResNeXt-50), 'De-confound-TDE' rows
    assert cells(with_tde) == [
        ("cifar100_lt", 10, 59.6), ("cifar100_lt", 50, 50.3), ("cifar100_lt", 100, 44.1),
        ("cifar10_lt", 10, 88.5), ("cifar10_lt", 50, 83.6), ("cifar10_lt", 100, 80.6), ("imagenet_lt", None, 51.8)]
    # the 'De-confound' rows: the same model without the counterfactual, alpha 0
    assert cells(alone) == [
        ("cifar100_lt", 10, 58.9), ("cifar100_lt", 50, 46.2), ("cifar100_lt", 100, 40.5),
        ("cifar10_lt", 10, 86.8), ("cifar10_lt", 50, 77.8), ("cifar10_lt", 100, 71.7), ("imagenet_lt", None, 48.6)]
    # CIFAR: the best epoch on the code's 'val', the test set; ImageNet-LT: on its own val split
    assert dict(zip(tde["dataset"], tde["selection"])) == {
        "cifar10_lt": "best_on_test", "cifar100_lt": "best_on_test", "imagenet_lt": "best_on_val"}


def test_alpha_is_chosen_on_validation_only_where_a_grid_is_set():
    other = toy_data(seed=1)  # images drawn apart from the toy run's, as a validation split
    data = dataclasses.replace(toy_data(), val_x=other.test_x, val_y=other.test_y)
    fixed_run = toy_trainer(toy_spec("tde", **{"tde.alpha": "1.5"}), data)
    assert fixed_run.method.calibrate(fixed_run) == {"alpha": 1.5, "selection": "fixed (alpha_grid unset)"}
    chosen_run = toy_trainer(toy_spec("tde", **{"tde.alpha_grid": "0,0.5,2"}), data)
    chosen = chosen_run.fit().calibration
    assert chosen["alpha"] in (0.0, 0.5, 2.0) and chosen["selection"] == "balanced accuracy on the validation split"
    assert chosen_run.method.alpha.item() == chosen["alpha"]
    features = chosen_run.features(data.val_x, data.val_y)
    method = chosen_run.method
    expected = causal_norm_logits(features, method.weight, 16.0, 1 / 32, 2, method.head_direction.value, chosen["alpha"])
    assert torch.equal(method.logits(features), expected)
