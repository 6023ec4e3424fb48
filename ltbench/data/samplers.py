"""Which training images an epoch draws, as index tensors.

Every sampler draws len(dataset) indices per epoch, so all draws of a method (e.g. the
hybrids' instance batch and class-balanced batch) have the same number of steps. Indices
come from a CPU generator whose state goes into the checkpoint, so a resumed run draws the
same batches and the draw does not depend on the device.
"""

import torch

from ltbench.errors import UserError


class Sampler:
    def __init__(self, labels: torch.Tensor, num_classes: int):
        self.labels = labels.cpu()
        self.num_classes = num_classes
        # members of each class, contiguous: class c is order[offsets[c] : offsets[c] + counts[c]]
        self.order = torch.argsort(self.labels, stable=True)
        self.counts = torch.bincount(self.labels, minlength=num_classes)
        self.offsets = torch.cumsum(self.counts, 0) - self.counts

    def __len__(self) -> int:
        return len(self.labels)

    def epoch(self, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def _uniform_member(self, classes: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        within = (torch.rand(len(classes), generator=gen) * self.counts[classes]).long()
        return self.order[self.offsets[classes] + within]


class InstanceSampler(Sampler):
    """Each image once per epoch, in random order (plain shuffling)."""

    def epoch(self, gen):
        return torch.randperm(len(self), generator=gen)


class ClassBalancedSampler(Sampler):
    """Decoupling's ClassAwareSampler: cycle through the classes in shuffled order, take
    `per_class` images from the chosen class, cycling through each class's images in shuffled
    order. Every class is drawn equally often (to within one draw) whatever the imbalance."""

    def __init__(self, labels, num_classes, per_class: int = 1):
        super().__init__(labels, num_classes)
        self.per_class = per_class
        self.present = torch.nonzero(self.counts).flatten()

    def epoch(self, gen):
        n, k = len(self), self.per_class
        draws = -(-n // k)
        cycles = -(-draws // len(self.present))
        class_order = torch.cat([self.present[torch.randperm(len(self.present), generator=gen)] for _ in range(cycles)])
        classes = class_order[:draws].repeat_interleave(k)[:n]
        picks = torch.empty(n, dtype=torch.long)
        for c in self.present.tolist():
            slots = torch.nonzero(classes == c).flatten()
            members = self.order[self.offsets[c] : self.offsets[c] + self.counts[c]]
            rounds = -(-len(slots) // len(members))
            cycle = torch.cat([members[torch.randperm(len(members), generator=gen)] for _ in range(rounds)])
            picks[slots] = cycle[: len(slots)]
        return picks


class SquareRootSampler(Sampler):
    """Class c drawn with probability proportional to sqrt(n_c) (Mahajan et al. 2018), then a
    uniform image of it."""

    def epoch(self, gen):
        weights = self.counts.double().sqrt()
        classes = torch.multinomial(weights, len(self), replacement=True, generator=gen)
        return self._uniform_member(classes, gen)


class ReversedSampler(Sampler):
    """BBN's reversed sampler (Zhou et al. 2020, Megvii-Nanjing/BBN lib/dataset/imbalance_cifar.py
    L59-88, L115-118): class c drawn with probability proportional to n_max / n_c, the rarest
    most often, then a uniform image of it."""

    def epoch(self, gen):
        counts = self.counts.double()
        weights = torch.where(counts > 0, counts.max() / counts.clamp(min=1), torch.zeros_like(counts))
        classes = torch.multinomial(weights, len(self), replacement=True, generator=gen)
        return self._uniform_member(classes, gen)


SAMPLERS = {"instance": InstanceSampler, "class_balanced": ClassBalancedSampler, "sqrt": SquareRootSampler,
            "reversed": ReversedSampler}


def make_sampler(draw, labels: torch.Tensor, num_classes: int) -> Sampler:
    """The sampler of one of a method's draws (ltbench.method.Draw)."""
    if draw.sampler not in SAMPLERS:
        raise UserError(f"unknown sampler '{draw.sampler}'", hint=f"use one of: {', '.join(SAMPLERS)}")
    if draw.sampler == "class_balanced":
        return ClassBalancedSampler(labels, num_classes, per_class=draw.per_class)
    return SAMPLERS[draw.sampler](labels, num_classes)


def samplers_for(draws: dict, labels: torch.Tensor, num_classes: int) -> dict[str, Sampler]:
    """One sampler per draw of a method."""
    return {name: make_sampler(d, labels, num_classes) for name, d in draws.items()}
