"""The hypersphere targets (LTH14/targeted-supcon target_generation.py) and the matching of
classes to them (moco/builder.py L369-372), and TSC's use of both."""

import torch
import torch.nn.functional as F

from ltbench.targets import (assign_targets, hypersphere_targets, min_pairwise_distance, optimise_targets,
                             uniformity_loss)
from ltbench_methods.tsc import TSCStage1


def test_the_optimisation_spreads_the_points():
    start, spread = optimise_targets(20, 8, seed=0, iterations=0), optimise_targets(20, 8, seed=0, iterations=300)
    assert torch.allclose(spread.norm(dim=1), torch.ones(20), atol=1e-6)
    assert min_pairwise_distance(spread) > min_pairwise_distance(start) + 0.1
    assert uniformity_loss(spread) < uniformity_loss(start)


def test_the_targets_are_deterministic_under_a_seed():
    assert torch.equal(optimise_targets(6, 4, seed=2, iterations=50), optimise_targets(6, 4, seed=2, iterations=50))
    assert not torch.equal(optimise_targets(6, 4, seed=2, iterations=50), optimise_targets(6, 4, seed=3, iterations=50))


def test_the_cache_returns_what_it_computed(tmp_path):
    first = hypersphere_targets(5, 3, seed=1, iterations=40, folder=tmp_path)
    assert [p.name for p in tmp_path.glob("*.npy")] == ["uniform_5x3_seed1_it40.npy"]
    assert torch.equal(hypersphere_targets(5, 3, seed=1, iterations=40, folder=tmp_path), first)
    assert torch.equal(first, optimise_targets(5, 3, seed=1, iterations=40))


def test_the_matching_maximises_the_total_similarity_not_each_row():
    # class 0 is nearest to target 0, but class 1 is nearer still, and target 1 is class 0's
    # second choice: a greedy row-by-row matching gives [0, 1] (total 0.74); the optimum [1, 0]
    targets = torch.eye(2)
    centroids = torch.tensor([[1.0, 0.9], [0.95, 0.0]])
    assert assign_targets(centroids, targets).tolist() == [1, 0]


def test_the_matching_recovers_a_permutation():
    targets = F.normalize(torch.randn(7, 5, generator=torch.Generator().manual_seed(0)), dim=1)
    order = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    assert assign_targets(targets[order] + 0.01, targets).tolist() == order.tolist()


def tsc(num_classes=3, dim=4):
    """A TSC stage 1 whose targets take 30 iterations (cached where the test's LTBENCH_CACHE says)."""
    hp = {**TSCStage1.defaults(), "projection_dim": dim, "target_iterations": 30}
    return TSCStage1(hp, [5] * num_classes, feature_dim=8)


def test_the_centroids_move_by_their_momentum_and_only_for_classes_in_the_batch(tmp_path, monkeypatch):
    monkeypatch.setenv("LTBENCH_CACHE", str(tmp_path))
    method = tsc()
    before = method.centroids.clone()
    z = F.normalize(torch.randn(4, 4, generator=torch.Generator().manual_seed(1)), dim=1)
    labels = torch.tensor([0, 0, 2, 2])
    method.update_centroids(z, labels)
    for c, rows in ((0, [0, 1]), (2, [2, 3])):
        mean = F.normalize(z[rows].mean(0), dim=0)
        assert torch.allclose(method.centroids[c], F.normalize(0.9 * before[c] + 0.1 * mean, dim=0), atol=1e-6)
    assert torch.equal(method.centroids[1], before[1])


def test_the_targets_travel_with_the_method_state(tmp_path, monkeypatch):
    monkeypatch.setenv("LTBENCH_CACHE", str(tmp_path))
    method = tsc()
    state = method.state_dict()
    assert torch.equal(state["targets"], method.targets) and "centroids" in state
    other = tsc()
    other.targets.zero_()
    other.load_state_dict(state)
    assert torch.equal(other.targets, method.targets)
