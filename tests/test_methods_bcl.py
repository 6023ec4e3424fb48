"""BCL's loss against a per-anchor, plain-float reading of Zhu et al.'s L_BCL with the code's
counts (loss/contrastive.py: the prototypes are members of their class, the anchor is none of its
own), its step against the two branches written out, its three views of the same images, and SimAugment's views."""

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ltbench.data import augment
from ltbench.method import Batch, Progress
from ltbench_methods.bcl import BCL, balanced_contrastive_loss
from ltbench_methods.sc_hybrid import supervised_contrastive_loss

COUNTS = [40, 20, 8, 4, 2]
STEP = Progress(epoch=0, epochs=200, step=0, steps=10)


def unit_rows(n: int, dim: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, dim, generator=gen, dtype=torch.float64), dim=1)


def slow_bcl(z, labels, prototypes, tau, class_averaging=True):
    """Mean over anchors i of -1/|P(i)| sum_p log(exp(z_i.z_p/tau) / sum_j 1/|A_j| sum_{k in A_j}
    exp(z_i.z_k/tau)), A = the other embeddings and the prototypes, A_j its members of class j."""
    rows, ys = z.tolist(), labels.tolist()
    members = [(row, y) for row, y in zip(rows, ys)]
    if prototypes is not None:
        members += [(row, c) for c, row in enumerate(prototypes.tolist())]
    total, anchors = 0.0, 0
    for i, (zi, yi) in enumerate(zip(rows, ys)):
        others = [m for k, m in enumerate(members) if k != i]
        similarity = [sum(a * b for a, b in zip(zi, zk)) / tau for zk, _ in others]
        classes = {y for _, y in others}
        size = {c: sum(1 for _, y in others if y == c) for c in classes}
        denominator = sum(math.exp(s) / (size[y] if class_averaging else 1) for s, (_, y) in zip(similarity, others))
        positives = [s for s, (_, y) in zip(similarity, others) if y == yi]
        if not positives:
            continue
        total += -sum(s - math.log(denominator) for s in positives) / len(positives)
        anchors += 1
    return total / anchors


@pytest.mark.parametrize("class_averaging", [True, False])
@pytest.mark.parametrize("with_prototypes", [True, False])
def test_bcl_matches_a_per_anchor_derivation(class_averaging, with_prototypes):
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 0])  # class 4 absent from the batch
    z = unit_rows(2 * len(labels), 16, seed=0)
    both_views = labels.repeat(2)
    prototypes = unit_rows(len(COUNTS), 16, seed=1) if with_prototypes else None
    for tau in (0.07, 0.5):
        fast = balanced_contrastive_loss(z, both_views, prototypes, tau, class_averaging)
        assert fast.item() == pytest.approx(slow_bcl(z, both_views, prototypes, tau, class_averaging), rel=1e-10)


def test_class_averaging_makes_the_denominator_the_number_of_classes():
    # every embedding and prototype orthogonal: each term is exp(0) = 1, so a class-averaged
    # denominator is the number of classes whatever their sizes, SupCon's the number of members
    labels = torch.tensor([0, 0, 1, 2]).repeat(2)
    basis = torch.eye(16, dtype=torch.float64)
    z, prototypes = basis[:8], basis[8:13]
    assert balanced_contrastive_loss(z, labels, prototypes, 0.1).item() == pytest.approx(math.log(5))
    assert balanced_contrastive_loss(z, labels, prototypes, 0.1, class_averaging=False).item() == pytest.approx(
        math.log(7 + 5))


def test_without_prototypes_or_averaging_it_is_supcon():
    labels = torch.tensor([0, 1, 1, 2, 3, 3]).repeat(2)
    z = unit_rows(12, 8, seed=3)
    assert balanced_contrastive_loss(z, labels, None, 0.1, class_averaging=False).item() == pytest.approx(
        supervised_contrastive_loss(z, labels, 0.1).item(), rel=1e-12)


def method(**hp):
    """In float32: the method runs its heads and losses in fp32 whatever the autocast."""
    return BCL({**BCL.defaults(), "projection_dim": 8, **hp}, COUNTS, feature_dim=6)


def test_the_prototypes_are_the_classifier_weights_through_their_own_head():
    bcl = method()
    weights = bcl.classifier.weight.T  # NormedLinear stores (in, out), as BCLModel's fc
    expected = F.normalize(bcl.prototype_head.mlp(weights), dim=1)
    assert torch.allclose(bcl.prototypes(), expected)
    assert bcl.prototypes().shape == (len(COUNTS), 8)
    labels = torch.tensor([0, 1, 2, 3]).repeat(2)
    bcl.feature_loss(unit_rows(8, 8, seed=4).float(), labels).backward()
    assert bcl.classifier.weight.grad.abs().sum() > 0  # class-complement trains the classifier too
    method_without = method(class_complement=False)
    method_without.feature_loss(unit_rows(8, 8, seed=4).float().requires_grad_(), labels).backward()
    assert method_without.classifier.weight.grad is None


def test_a_step_is_alpha_logit_compensated_ce_plus_beta_bcl():
    bcl = method(alpha=0.7, beta=0.35)
    gen = torch.Generator().manual_seed(5)
    features = lambda n: torch.randn(n, 6, 1, 1, generator=gen)  # noqa: E731
    # main.py's batch: the classifier's view of N images, then their two contrastive views
    batch = Batch([features(4), features(4), features(4)], torch.tensor([4, 3, 0, 1]))
    total = bcl.loss(nn.Flatten(), {"main": batch}, STEP)

    x = batch.views[0].flatten(1)
    cosine = F.normalize(x, dim=1) @ F.normalize(bcl.classifier.weight, dim=0)
    prior = torch.tensor(COUNTS, dtype=torch.float32) / sum(COUNTS)
    ce = F.cross_entropy(30 * cosine + prior.log(), batch.labels)
    # the contrastive views' embeddings through the head in one batch (its BatchNorm sees both views)
    embeddings = bcl.projection(torch.cat(batch.views[1:]).flatten(1))
    bcl_loss = slow_bcl(embeddings.detach().double(), batch.labels.repeat(2), bcl.prototypes().detach().double(),
                        0.07)
    assert total.item() == pytest.approx(0.7 * ce.item() + 0.35 * bcl_loss, rel=1e-5)
    assert torch.allclose(bcl.logits(x), 30 * cosine, atol=1e-5)  # the prediction: no prior at test time


@pytest.mark.parametrize("cl_views, contrastive", [("sim-sim", ("sim", "sim")), ("sim-rand", ("sim_rand", "sim")),
                                                   ("rand-rand", ("sim_rand", "sim_rand")),
                                                   ("standard", ("standard", "standard"))])
def test_one_draw_gives_the_classifier_view_then_the_cl_views_pair(cl_views, contrastive):
    draws = method(contrastive_augment=cl_views).draws
    assert list(draws) == ["main"]
    assert [v.augment for v in draws["main"].view_list()] == ["rand_cls", *contrastive]


@pytest.mark.parametrize("kind", ["device", "dataloader"])
def test_the_three_views_are_of_the_same_images(kind):
    from ltbench.data.loader import DeviceLoader
    from ltbench.data.reference_loader import ReferenceLoader
    from ltbench.testing import toy_data

    data = toy_data()
    loader_class = DeviceLoader if kind == "device" else partial(ReferenceLoader, workers=0)
    identity = method(classifier_augment="none", contrastive_augment="none").draws
    batch = next(loader_class(data, identity, 16, "cpu", seed=3).epoch())["main"]
    assert len(batch.views) == 3
    assert torch.equal(batch.views[0], batch.views[1]) and torch.equal(batch.views[0], batch.views[2])
    # and they are the labelled images: un-augmented, each view is its label's training image
    images = (torch.from_numpy(data.train_x).float() / 255 - 0.5) / 0.25
    rows = [next(i for i in range(len(images)) if torch.allclose(images[i], view, atol=1e-5))
            for view in batch.views[0]]
    assert torch.equal(torch.from_numpy(data.train_y[rows]), batch.labels)
    # with the paper's augmentations the three views differ, one batch of N labels for them all
    batch = next(loader_class(data, method().draws, 16, "cpu", seed=3).epoch())["main"]
    assert [len(v) for v in batch.views] == [16, 16, 16] and len(batch.labels) == 16
    assert not torch.equal(batch.views[1], batch.views[2])


def test_defaults_follow_the_released_code():
    from ltbench.registry import dataset

    card = BCL.settings(dataset("imagenet_lt"))
    assert (card["temperature"].default, card["alpha"].default, card["beta"].default) == (0.07, 1.0, 0.35)
    assert BCL.protocol_defaults(dataset("imagenet_lt"))["epochs"] == 90
    assert BCL.protocol_defaults(dataset("inat2018"))["lr"] == 0.2
    assert all("f72d070" in s.source for s in card.values() if not s.source.startswith("ltbench default"))


def test_simaugment_views_are_seeded_per_sample_and_grey_about_a_fifth():
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).repeat(2000, 1, 1, 1)
    a = augment.sim(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, augment.sim(x, torch.Generator().manual_seed(5)))
    assert a.shape == x.shape and a.dtype == torch.uint8
    grey = ((a[:, 0] == a[:, 1]) & (a[:, 1] == a[:, 2])).flatten(1).all(dim=1).float().mean()
    assert 0.16 < grey < 0.24  # RandomGrayscale(0.2)
    assert len({tuple(v.flatten().tolist()) for v in a[:50]}) == 50


def test_simaugment_has_a_torchvision_version_for_the_reference_loader():
    from torchvision import transforms

    from ltbench.data.reference_loader import pil_transform
    from ltbench.method import View
    from ltbench.testing import toy_data

    steps = pil_transform(toy_data(), View("sim"), padding=4, flip=True).transforms
    crop, _, jitter, grey = steps[:4]
    assert isinstance(crop, transforms.RandomResizedCrop) and crop.scale == (0.08, 1.0)
    assert jitter.p == 0.8 and jitter.transforms[0].hue == (-0.1, 0.1)
    assert isinstance(grey, transforms.RandomGrayscale) and grey.p == 0.2


def test_memory_bench_measures_bcl_whose_cost_grows_with_the_classes(tmp_path, capsys):
    import json

    from ltbench.cli import main

    peaks = {}
    for classes in (10, 1000):
        assert main(["bench", "--memory", "--losses", "psc,bcl", "--batch-sizes", "64", "--classes", str(classes),
                     "--device", "cpu", "--out", str(tmp_path / f"m{classes}.csv"), "--plot", "", "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert [r["loss"] for r in rows] == ["psc", "bcl"]
        peaks[classes] = {r["loss"]: r["peak_mem_mb"] for r in rows}
    # 128 embeddings against 128 + C rows, and the prototype head over C rows
    assert peaks[1000]["bcl"] > 3 * peaks[10]["bcl"]
    assert peaks[10]["bcl"] > peaks[10]["psc"]


def test_memory_bench_refuses_an_unknown_loss(tmp_path, capsys):
    from ltbench.cli import main

    assert main(["bench", "--memory", "--losses", "psc,nosuch", "--out", str(tmp_path / "m.csv")]) == 2
    assert "--losses must be a comma list of sc, psc, bcl, paco, kcl, tsc" in capsys.readouterr().err
    assert not (tmp_path / "m.csv").exists()


def test_simaugment_has_an_image_file_version():
    from ltbench.data.image_loader import view_functions
    from ltbench.method import Draw

    first, second = view_functions(Draw(views=2, augment="sim"), {"image_size": 224, "flip": True})
    assert first.keywords == second.keywords
    view = first
    assert {key: view.keywords[key] for key in ("scale", "jitter", "jitter_hue", "jitter_p", "grayscale_p")} == {
        "scale": (0.08, 1.0), "jitter": 0.4, "jitter_hue": 0.1, "jitter_p": 0.8, "grayscale_p": 0.2}
