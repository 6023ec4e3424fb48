"""Class targets spread uniformly over the unit hypersphere, and the matching of classes to them.

Targeted supervised contrastive learning (Li et al., CVPR 2022) pulls each class towards one of
C fixed points on the sphere S^(d-1), chosen before training to be as far apart as possible.
LTH14/targeted-supcon@c4f15eb target_generation.py finds them by minimising the uniformity
loss mean_i log sum_j exp(t_i . t_j / 0.07) over C normalised vectors with Adam (lr 1e-3,
10,000 iterations from a standard normal start), keeping the iterate of lowest loss.

The points depend only on (C, d, seed, the optimisation's settings), so they are computed once
and cached on disk; a method keeps them as a buffer, so its checkpoint carries the very points
it trained with and evaluation or resume never depends on the cache. The optimisation runs on
the CPU, O(C^2 d) an iteration: quick for CIFAR's 10 or 100 classes, long for iNaturalist's
8,142 (once per class count, width and seed, then cached).
"""

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock
from scipy.optimize import linear_sum_assignment

TSC = "LTH14/targeted-supcon@c4f15eb"
GENERATION = f"{TSC} target_generation.py"


def uniformity_loss(points: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """target_generation.py L15: mean_i log sum_j exp(t_i . t_j / temperature), j = i included."""
    return (points @ points.T / temperature).logsumexp(dim=1).mean()


def optimise_targets(num_classes: int, dim: int, seed: int = 0, iterations: int = 10_000, lr: float = 1e-3,
                     temperature: float = 0.07) -> torch.Tensor:
    """C unit vectors in R^dim spread by Adam on the uniformity loss (target_generation.py
    L22-40): the normalised iterate of lowest loss, drawn from a generator seeded with `seed`."""
    if num_classes < 1 or dim < 1 or iterations < 0:
        raise ValueError(f"targets need num_classes >= 1, dim >= 1 and iterations >= 0, "
                         f"got {num_classes}, {dim}, {iterations}")
    generator = torch.Generator().manual_seed(seed)
    with torch.enable_grad():
        x = torch.randn(num_classes, dim, generator=generator, dtype=torch.float64).requires_grad_(True)
        optimizer = torch.optim.Adam([x], lr=lr)
        best, best_loss = F.normalize(x.detach(), dim=1), float("inf")
        for _ in range(iterations + 1):
            points = F.normalize(x, dim=1)
            loss = uniformity_loss(points, temperature)
            if loss.item() < best_loss:
                best, best_loss = points.detach().clone(), loss.item()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return best.float()


def cache_dir() -> Path:
    return Path(os.environ.get("LTBENCH_CACHE", Path.home() / ".cache" / "ltbench")) / "targets"


def hypersphere_targets(num_classes: int, dim: int, seed: int = 0, iterations: int = 10_000,
                        folder: Path | None = None) -> torch.Tensor:
    """optimise_targets' points, read from the cache where an earlier run computed them; the
    first process to need them computes and writes them atomically under a lock."""
    folder = Path(folder) if folder is not None else cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"uniform_{num_classes}x{dim}_seed{seed}_it{iterations}.npy"
    with FileLock(f"{path}.lock"):
        if path.exists():
            points = np.load(path)
            if points.shape == (num_classes, dim):
                return torch.from_numpy(points)
        points = optimise_targets(num_classes, dim, seed, iterations).numpy()
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        with open(partial, "wb") as handle:
            np.save(handle, points)
        os.replace(partial, path)
    return torch.from_numpy(points)


def min_pairwise_distance(points: torch.Tensor) -> float:
    distances = torch.cdist(points.double(), points.double())
    return float(distances.masked_fill(torch.eye(len(points), dtype=torch.bool), float("inf")).min())


def assign_targets(centroids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The target of each class: the one-to-one matching of class centroids to targets of
    largest total cosine (moco/builder.py L369-372, scipy's Hungarian linear_sum_assignment on
    minus the similarity). Returns a (C,) long tensor, the target index of class c."""
    similarity = (F.normalize(centroids.float(), dim=1) @ targets.float().T).detach().cpu().numpy()
    rows, cols = linear_sum_assignment(-similarity)
    assigned = torch.empty(len(rows), dtype=torch.long)
    assigned[torch.from_numpy(rows)] = torch.from_numpy(cols).long()
    return assigned.to(centroids.device)
