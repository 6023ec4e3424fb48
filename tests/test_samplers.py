import torch

from ltbench.data.profiles import class_counts
from ltbench.data.samplers import ClassBalancedSampler, InstanceSampler, SquareRootSampler


def labels_for(counts):
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]


def test_instance_sampler_is_a_permutation():
    labels = labels_for([50, 20, 5])
    idx = InstanceSampler(labels, 3).epoch(torch.Generator().manual_seed(0))
    assert sorted(idx.tolist()) == list(range(75))


def test_class_balanced_draws_every_class_equally_often():
    counts = class_counts(10, 5000, 100)
    labels = labels_for(counts)
    sampler = ClassBalancedSampler(labels, 10)
    drawn = torch.bincount(labels[sampler.epoch(torch.Generator().manual_seed(0))], minlength=10)
    assert drawn.sum() == sum(counts)
    assert drawn.max() - drawn.min() <= 1
    # within a class the sampler cycles through all images before repeating one
    idx = sampler.epoch(torch.Generator().manual_seed(1))
    tail = idx[labels[idx] == 9]
    assert len(set(tail[: counts[9]].tolist())) == counts[9]


def test_class_balanced_with_several_per_draw():
    labels = labels_for([300, 30, 3])
    idx = ClassBalancedSampler(labels, 3, per_class=4).epoch(torch.Generator().manual_seed(0))
    drawn = torch.bincount(labels[idx], minlength=3)
    assert drawn.max() - drawn.min() <= 4


def test_square_root_sampler_follows_sqrt_counts():
    counts = [10000, 2500, 400, 100]
    labels = labels_for(counts)
    gen = torch.Generator().manual_seed(0)
    sampler = SquareRootSampler(labels, 4)
    drawn = sum(torch.bincount(labels[sampler.epoch(gen)], minlength=4).double() for _ in range(5))
    expected = torch.tensor(counts).double().sqrt()
    expected = expected / expected.sum()
    assert torch.allclose(drawn / drawn.sum(), expected, atol=0.01)
