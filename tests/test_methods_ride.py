"""RIDE: its loss against a plain-float re-derivation of frank-xwang/RIDE-LongTailRecognition's
RIDELoss (model/loss.py L124-247), its multi-expert backbones (shared early layers, one copy of
the later stages per expert) and the forward FLOPs a run records, against FLOPs counted by hand
from the convolutions' shapes."""

import dataclasses
import math

import pytest
import timm
import torch

from ltbench.experts import create_expert_backbone
from ltbench.flops import forward_flops, run_forward_flops
from ltbench.method import Batch
from ltbench.testing import TOY_SIDE, toy_data, toy_spec, toy_trainer
from ltbench_methods.ride import RIDEExperts, diversity_weights, ride_loss
from test_methods_losses import COUNTS, progress, ref_effective_weights, ref_ldam


def cosines(n=12, experts=3, seed=0, labels=None):
    gen = torch.Generator().manual_seed(seed)
    cos = torch.rand(n, experts, len(COUNTS), generator=gen, dtype=torch.float64) * 2 - 1
    if labels is None:
        labels = torch.randint(0, len(COUNTS), (n,), generator=gen)
    return cos, labels


def ref_diversity_weights(counts, factor):
    raw = [len(counts) * n / sum(counts) * factor + 1 - factor for n in counts]
    return [w / max(raw) for w in raw]


def softmax(z):
    top = max(z)
    e = [math.exp(v - top) for v in z]
    return [v / sum(e) for v in e]


def ref_ride(cos, labels, counts, factor, temperatures, class_weights=None, max_margin=0.5, s=30.0):
    """sum over experts k of LDAM(cos_k) + factor * mean(T)^2 * KL(softmax(z/T) || softmax(z_k/T)),
    z_k = s cos_k, z their mean, KL summed over classes and averaged over the batch."""
    rows = cos.tolist()  # [n][experts][classes]
    experts = len(rows[0])
    mean = [[sum(s * row[k][c] for k in range(experts)) / experts for c in range(len(counts))] for row in rows]
    t_mean = sum(temperatures) / len(temperatures)
    total = 0.0
    for k in range(experts):
        own = torch.tensor([row[k] for row in rows]) if factor != 0 else torch.tensor(mean) / s
        total += ref_ldam(own, labels, counts, max_margin, s, class_weights)
        kl = 0.0
        for i, row in enumerate(rows):
            q = softmax([m / t for m, t in zip(mean[i], temperatures)])
            p = softmax([s * v / t for v, t in zip(row[k], temperatures)])
            kl += sum(qc * (math.log(qc) - math.log(pc)) for qc, pc in zip(q, p))
        total += factor * t_mean**2 * kl / len(rows)
    return total


def ldam(**hp):
    return RIDEExperts({**RIDEExperts.defaults(), **hp}, COUNTS, feature_dim=8).ldam.double()


LOSS_CASES = {
    "three experts": dict(),
    "one sample": dict(n=1, labels=torch.tensor([4])),
    "only the one-image class": dict(labels=torch.full((12,), 4)),
    "one expert": dict(experts=1),
}


@pytest.mark.parametrize("case", LOSS_CASES)
@pytest.mark.parametrize("factor", [-0.45, -0.2, 0.0, 0.3])
def test_ride_loss_before_reweighting(case, factor):
    cos, labels = cosines(**LOSS_CASES[case])
    got = ride_loss(cos, labels, ldam(), factor, 1.0).item()
    want = ref_ride(cos, labels, COUNTS, factor, [1.0] * len(COUNTS))
    assert got == pytest.approx(want, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("case", LOSS_CASES)
@pytest.mark.parametrize("base", [1.0, 2.5])
def test_ride_loss_with_per_class_temperatures_and_drw_weights(case, base):
    cos, labels = cosines(**LOSS_CASES[case])
    temperatures = [base * w for w in ref_diversity_weights(COUNTS, 0.05)]
    weights = ref_effective_weights(COUNTS, 0.9999)
    got = ride_loss(cos, labels, ldam(), -0.45, torch.tensor(temperatures, dtype=torch.float64),
                    torch.tensor(weights, dtype=torch.float64)).item()
    want = ref_ride(cos, labels, COUNTS, -0.45, temperatures, weights)
    assert got == pytest.approx(want, rel=1e-6, abs=1e-8)


def test_diversity_weights_by_hand():
    # counts 3:1, r = 0.05: C p r + 1 - r = 2 * 0.75 * 0.05 + 0.95 = 1.025 and 2 * 0.25 * 0.05 + 0.95 = 0.975
    got = diversity_weights(torch.tensor([3.0, 1.0]), 0.05)
    assert got.tolist() == pytest.approx([1.0, 0.975 / 1.025])
    assert diversity_weights(torch.tensor(COUNTS, dtype=torch.float), 0.02).tolist() == pytest.approx(
        ref_diversity_weights(COUNTS, 0.02))


def test_the_method_reweights_and_tempers_from_80_percent_of_the_epochs():
    method = RIDEExperts(RIDEExperts.defaults(), COUNTS, feature_dim=8)
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(10, 3, 8, generator=gen)
    labels = torch.randint(0, len(COUNTS), (10,), generator=gen)
    batches = {"main": Batch([torch.zeros(10, 1)], labels)}
    heads = [torch.nn.functional.normalize(h.weight.detach().double(), dim=0) for h in method.classifiers]
    cos = torch.stack([torch.nn.functional.normalize(features[:, k].double(), dim=1) @ heads[k] for k in range(3)], 1)
    for epoch, temperatures, weights in [
            (159, [1.0] * len(COUNTS), None),
            (160, ref_diversity_weights(COUNTS, 0.05), ref_effective_weights(COUNTS, 0.9999))]:
        got = method.loss(lambda _: features, batches, progress(epoch)).item()
        assert got == pytest.approx(ref_ride(cos, labels, COUNTS, -0.45, temperatures, weights), rel=1e-5)
        assert method.take_recorded()["drw"] == float(epoch >= 160)


def test_logits_are_the_mean_of_the_experts_scaled_cosines():
    method = RIDEExperts(RIDEExperts.defaults(), COUNTS, feature_dim=8)
    features = torch.randn(4, 3, 8)
    expected = sum(30.0 * head(features[:, k]) for k, head in enumerate(method.classifiers)) / 3
    assert torch.allclose(method.logits(features), expected, atol=1e-5)


# ---------------------------------------------------------------- the backbones


@pytest.mark.parametrize("name, experts, reduce, side, dim", [
    ("ride_resnet32_cifar", 3, True, 32, 48), ("ride_resnet32_cifar", 2, False, 32, 64),
    ("ride_resnet8_cifar", 4, True, 16, 48), ("ride_resnet50", 2, True, 64, 1536), ("ride_resnet18", 3, False, 64, 512)])
def test_features_are_batch_by_expert_by_dim(name, experts, reduce, side, dim):
    backbone = timm.create_model(name, num_experts=experts, reduce_dimension=reduce).eval()
    assert (backbone.num_experts, backbone.num_features) == (experts, dim)
    with torch.no_grad():
        assert tuple(backbone(torch.randn(2, 3, side, side)).shape) == (2, experts, dim)


@pytest.mark.parametrize("name", ["resnet8_cifar", "resnet18"])
def test_experts_share_the_early_layers_and_own_the_later_ones(name):
    backbone = create_expert_backbone(name, in_chans=3, num_experts=3)
    shared = list(backbone.shared.parameters())
    # one parameter object for all experts: the backbone holds the shared stage once
    assert len(list(backbone.parameters())) == len(shared) + sum(len(list(e.parameters())) for e in backbone.experts)
    backbone(torch.randn(2, 3, 32, 32))[:, 1].sum().backward()  # expert 1's features only
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in shared)
    assert all(p.grad is None or not p.grad.any() for k in (0, 2) for p in backbone.experts[k].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.experts[1].parameters())


def test_one_full_width_expert_is_the_plain_resnet32():
    one = timm.create_model("ride_resnet32_cifar", num_experts=1, reduce_dimension=False)
    plain = timm.create_model("resnet32_cifar", num_classes=0)
    assert sum(p.numel() for p in one.parameters()) == sum(p.numel() for p in plain.parameters())


@pytest.mark.parametrize("method, backbone, why", [
    ("ride", "vit_tiny_patch16_224", "has no multi-expert form"),
    ("ride_ea", "vit_tiny_patch16_224", "has no multi-expert form"),
    ("ce", "ride_resnet8_cifar", "gives one feature vector per expert, and ce takes one per image")])
def test_a_backbone_the_method_cannot_use_is_refused_before_anything_runs(tmp_path, capsys, method, backbone, why):
    from ltbench.cli import main

    code = main(["run", "--methods", method, "--dataset", "cifar10_lt", "--if", "100", "--preset", "smoke",
                 "--backbone", backbone, "--results-dir", str(tmp_path / "results")])
    assert code == 2 and why in capsys.readouterr().err
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


def test_a_backbone_without_a_multi_expert_form_is_refused():
    from ltbench.errors import UserError

    with pytest.raises(UserError, match="has no multi-expert form") as caught:
        create_expert_backbone("vit_tiny_patch16_224", in_chans=3, num_experts=3)
    assert "resnet32_cifar" in caught.value.hint


# ---------------------------------------------------------------- forward FLOPs


def cifar_resnet_flops(depth, side, classes, in_chans=3, widths=(32, 64), experts=1):
    """2 x the multiply-adds of He et al.'s CIFAR ResNet, counted from its convolutions' shapes:
    conv1 and the first stage at `side`, each expert's second and third stages at side/2 and
    side/4 (widths), and each expert's classifier over its pooled feature."""
    n = (depth - 2) // 6

    def convs(cin, cout, hw):  # one stage of n blocks of two 3x3 convolutions
        return 9 * cin * cout * hw + (2 * n - 1) * 9 * cout * cout * hw

    second, third = widths
    shared = 9 * in_chans * 16 * side**2 + convs(16, 16, side**2)
    expert = convs(16, second, (side // 2) ** 2) + convs(second, third, (side // 4) ** 2) + third * classes
    return 2 * (shared + experts * expert)


def test_resnet32_flops_are_counted_as_by_hand():
    trainer = toy_trainer(toy_spec("ce", backbone="resnet32_cifar"), toy_data())
    assert run_forward_flops(trainer) == cifar_resnet_flops(32, TOY_SIDE, classes=trainer.data.num_classes)
    # at 32 px: 69 M multiply-adds, the figure He et al.'s ResNet-32 is known by
    image = torch.zeros(1, 3, 32, 32)
    assert forward_flops(trainer.backbone, trainer.method, image) == cifar_resnet_flops(32, 32, trainer.data.num_classes)
    assert 0.068e9 < cifar_resnet_flops(32, 32, 10) / 2 < 0.071e9


def test_three_experts_cost_about_twice_one():
    # RIDE's point: three reduced-width experts on a shared first stage cost far less than
    # three networks; against one such expert the ratio is 1 < r < 3
    data = toy_data()
    counted = {}
    for experts in (1, 3):
        trainer = toy_trainer(toy_spec("ride", backbone="resnet32_cifar", **{"ride.num_experts": str(experts)}), data)
        counted[experts] = run_forward_flops(trainer)
        assert counted[experts] == cifar_resnet_flops(32, TOY_SIDE, data.num_classes, widths=(24, 48), experts=experts)
    assert 1.9 < counted[3] / counted[1] < 2.2
    assert trainer.backbone.training and trainer.method.training  # counted in eval mode, then put back


# ---------------------------------------------------------------- the expert router (RIDE-EA)


def ref_targets(logits, labels):
    """ea_resnet_cifar.py L221-228, image by image: expert i's decision is 'help' where the sum
    of experts 0..i predicts wrong and the sum of 0..j does right for some j > i."""
    rows = []
    for z, y in zip(logits.tolist(), labels.tolist()):
        sums, correct = [0.0] * len(z[0]), []
        for expert in z:
            sums = [a + b for a, b in zip(sums, expert)]
            correct.append(max(range(len(sums)), key=sums.__getitem__) == y)
        rows.append([not correct[i] and any(correct[i + 1:]) for i in range(len(z) - 1)])
    return rows


def test_router_targets_image_by_image():
    from ltbench_methods.ride_ea import router_targets

    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(64, 4, 5, generator=gen)
    labels = torch.randint(0, 5, (64,), generator=gen)
    got = router_targets(logits, labels)
    assert got.tolist() == ref_targets(logits, labels)
    assert 0 < got.sum() < got.numel()  # the batch has both kinds of target


def test_routing_stops_each_image_where_the_router_says():
    from ltbench_methods.ride_ea import route

    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(32, 3, 6, generator=gen)
    # a router that reads the mean logits so far: go on while their top value is below a bar
    bars = [1.5, 0.8]

    def help_logit(i, mean):
        return (bars[i] - mean.max(1).values) * 10

    got, count = route(logits, help_logit)
    for image in range(len(logits)):  # the original's evaluation loop (L236-250), one image at a time
        total, used = logits[image, 0].clone(), 1
        for i in range(1, 3):
            if torch.sigmoid(help_logit(i - 1, (total / used)[None]))[0] <= 0.5:
                break
            total, used = total + logits[image, i], used + 1
        assert count[image] == used
        assert torch.allclose(got[image], total / used)
    assert set(count.tolist()) == {1.0, 2.0, 3.0}  # some images stop at each expert


def test_the_router_trains_on_a_frozen_ride_run_and_records_its_routing():
    fresh = toy_data(seed=1)  # images of the same classes the runs never train on, as validation
    data = dataclasses.replace(toy_data(), val_x=fresh.test_x, val_y=fresh.test_y)
    trainer = toy_trainer(toy_spec("ride_ea", **{"ride_ea.ea_epochs": "1"}), data)
    method = trainer.method
    frozen = [p for p in method.experts.parameters()] + list(trainer.backbone.parameters())
    before = [p.detach().clone() for p in frozen]
    router = [p.detach().clone() for p in method.decide.parameters()]
    outcome = trainer.fit()
    assert all(torch.equal(a, p) for a, p in zip(before, frozen))  # experts and backbone untouched
    assert any(not torch.equal(a, p) for a, p in zip(router, method.decide.parameters()))
    assert 1 <= outcome.calibration["experts_per_image_val"] <= 3
    assert "helps" in outcome.history[0]
