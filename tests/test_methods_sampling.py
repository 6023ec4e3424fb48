"""Class-balanced sampling as decoupling's stage 2 uses it, checked statistically, and the
stage-2 trainer wired the way the paper's configs say."""

import math

import numpy as np
import pytest
import torch

from ltbench.data.datasets import LongTailData
from ltbench.data.loader import DeviceLoader
from ltbench.data.profiles import class_counts
from ltbench.data.samplers import ClassBalancedSampler
from ltbench.runner import make_trainer
from ltbench.method import Draw
from ltbench.models import create_backbone
from ltbench.stages import FrozenBackbone, Stage1
from ltbench.sweep import resolve
from ltbench.train import learning_rate
from ltbench_methods.ce import CrossEntropy

COUNTS = class_counts(10, 1000, 100)  # the quick preset's Fashion-MNIST-LT at IF 100: 1000 ... 10


def labels_for(counts, seed=0):
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


def chi_square_p(observed: np.ndarray, expected: np.ndarray) -> float:
    """Upper tail of the chi-square statistic (Wilson-Hilferty normal approximation)."""
    stat = float(((observed - expected) ** 2 / expected).sum())
    k = len(observed) - 1
    z = ((stat / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))
    return 0.5 * math.erfc(z / math.sqrt(2))


@pytest.mark.parametrize("per_class", [1, 4])
def test_classes_are_drawn_uniformly_whatever_their_size(per_class):
    labels = labels_for(COUNTS)
    sampler = ClassBalancedSampler(labels, 10, per_class=per_class)
    gen = torch.Generator().manual_seed(0)
    drawn = np.zeros(10)
    for _ in range(20):
        per_epoch = torch.bincount(labels[sampler.epoch(gen)], minlength=10).numpy()
        assert per_epoch.max() - per_epoch.min() <= per_class  # exact balance within one draw, every epoch
        drawn += per_epoch
    assert drawn.sum() == 20 * sum(COUNTS)


def test_images_within_a_class_are_drawn_uniformly():
    labels = labels_for(COUNTS)
    sampler = ClassBalancedSampler(labels, 10, per_class=4)
    gen = torch.Generator().manual_seed(1)
    hits = torch.zeros(len(labels))
    for _ in range(20):
        hits += torch.bincount(sampler.epoch(gen), minlength=len(labels))
    for c in (0, 4, 9):  # head, middle and tail
        members = hits[labels == c].numpy()
        # a class cycles through its images before repeating one: counts differ by at most 1
        # per epoch, so the spread over 20 epochs is small next to the mean
        assert members.max() - members.min() <= 20
        assert chi_square_p(members, np.full(len(members), members.mean())) > 1e-3


def test_every_stage2_batch_is_close_to_balanced():
    counts = COUNTS
    x = np.zeros((sum(counts), 1, 32, 32), dtype=np.uint8)
    y = labels_for(counts).numpy()
    data = LongTailData("toy", x, y, x[:10], y[:10], counts, (0.5,), (0.5,))
    loader = DeviceLoader(data, {"main": Draw(sampler="class_balanced", per_class=4)}, 512, "cpu", seed=0)
    for _ in range(3):
        for batches in loader.epoch():
            per_class = torch.bincount(batches["main"].labels, minlength=10)
            if len(batches["main"].labels) == 512:
                # 128 draws of 4 over 10 classes: 12 or 13 draws each, the shuffled class order
                # moving at most one more draw to a class across a cycle boundary
                assert per_class.max() - per_class.min() <= 12, per_class.tolist()


def fake_stage1(spec, counts):
    torch.manual_seed(5)
    backbone = create_backbone(spec.backbone, 1)
    ce = CrossEntropy(spec.own_hyperparameters, counts, backbone.num_features)
    state = {"backbone": backbone.state_dict(), "method": ce.state_dict(), "seconds": 1.0, "images": 10}
    return Stage1(spec, reused=True, result={"peak_mem_mb": "1"}, state=state), backbone, ce


def test_crt_stage2_trains_only_a_fresh_classifier_the_papers_way():
    counts = [40, 20, 10, 5]
    x = np.random.default_rng(0).integers(0, 255, (sum(counts), 1, 32, 32), dtype=np.uint8)
    y = np.repeat(np.arange(4), counts)
    data = LongTailData("toy", x, y, x[:8], y[:8], counts, (0.5,), (0.5,))
    spec = resolve("crt", "fashion_mnist_lt", 100, 0, "quick", {})
    first, backbone, ce = fake_stage1(resolve("ce", "fashion_mnist_lt", 100, 0, "quick", {}), counts)
    trainer = make_trainer(spec, data, torch.device("cpu"), stage1=first)
    assert isinstance(trainer.backbone, FrozenBackbone)
    for key, value in backbone.state_dict().items():
        assert torch.equal(trainer.backbone.backbone.state_dict()[key], value)
    assert not torch.equal(trainer.method.classifier.weight, ce.classifier.weight)  # re-initialised
    assert (trainer.epochs, trainer.batch_size) == (10, 512)
    p = trainer.params
    assert (p["lr"], p["momentum"], p["weight_decay"], p["warmup_epochs"]) == (0.2, 0.9, 5e-4, 0)
    # the cosine steps before each epoch, as classifier-balancing's: the last epoch trains at lr 0
    assert trainer.lr_step_first
    assert learning_rate(0, 10, p, step_first=True) == pytest.approx(0.1 * (1 + math.cos(math.pi / 10)))
    assert learning_rate(9, 10, p, step_first=True) == 0
    assert trainer.backbone.bn_train  # BatchNorm in train mode, as classifier-balancing's stage 2
    sampler = trainer.loader.samplers["main"]
    assert isinstance(sampler, ClassBalancedSampler) and sampler.per_class == 4
    trainable = {n for n, q in list(trainer.backbone.named_parameters()) + list(trainer.method.named_parameters())
                 if q.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}
    before = {k: v.clone() for k, v in trainer.backbone.named_parameters()}
    trainer.epochs = 1
    trainer.fit()
    # the weights stay the CE run's; only BatchNorm's running statistics follow stage 2's batches
    assert all(torch.equal(before[k], v) for k, v in trainer.backbone.named_parameters())
