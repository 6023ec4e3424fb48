"""Long-tailed datasets built the way the papers build them, each with its balanced test set."""

from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import numpy as np

from ltbench.data import sources
from ltbench.data.profiles import class_counts, select_long_tail

# LDAM-DRW normalises CIFAR-100 with CIFAR-10's statistics too; keep that for fidelity.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)
# Held-out images per class: the source training split's images that the long-tailed
# construction leaves out, for choices made after training (tau-norm's tau), never the test set
HOLDOUT_PER_CLASS = 100


@dataclass
class LongTailData:
    """A long-tailed training set and a balanced test set, images uint8 NCHW."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_counts: list[int]
    mean: tuple
    std: tuple
    holdout_x: np.ndarray | None = None  # see HOLDOUT_PER_CLASS; None where there is none
    holdout_y: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_counts)

    @property
    def in_chans(self) -> int:
        return self.train_x.shape[1]


def holdout_indices(labels: np.ndarray, keep: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """Up to `per_class` indices of every class among the images `keep` leaves out, chosen by
    a fixed shuffle, so the held-out set is the same for every run of a dataset."""
    left = np.setdiff1d(np.arange(len(labels)), keep)
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(left[labels[left] == c])[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    summary: str
    family: str  # which method defaults apply ("cifar" for the 32x32 benchmarks)
    num_classes: int
    n_max: int  # head-class size of the paper construction
    read: Callable = field(repr=False)  # root -> (train_x, train_y, test_x, test_y)
    mean: tuple = CIFAR10_MEAN
    std: tuple = CIFAR10_STD
    pad_to: int | None = None  # pad images to this side (Fashion-MNIST 28 -> 32)
    # Datasets published with their long-tailed split (ImageNet-LT, iNaturalist) have one
    # imbalance factor, the published one; the constructed ones take any.
    fixed_imbalance_factor: float | None = None
    # Trainer settings of the dataset's paper protocol, under the method's own defaults
    # (backbone, epochs, lr, ...); the CIFAR protocol is the trainer's defaults, so empty here.
    protocol: dict = field(default_factory=dict, compare=False)
    display_name: str = ""  # as tables print it (CIFAR-10-LT); default: the name
    # how the report groups classes into many / medium / few by training count
    # (ltbench.data.profiles.SHOT_RULES)
    shot_rule: str = "cb"
    # (root, allow_apt, log) -> makes the files available under root, for `ltbench fetch-data`;
    # None where the user must bring them (the image-file datasets)
    fetch: Callable | None = field(default=None, repr=False, compare=False)

    @property
    def title(self) -> str:
        return self.display_name or self.name

    def build(self, root, imbalance_factor: float, profile: str = "exp", n_max: int | None = None) -> LongTailData:
        train_x, train_y, test_x, test_y = self.read(sources.data_root(root))
        counts = class_counts(self.num_classes, n_max or self.n_max, imbalance_factor, profile)
        keep = select_long_tail(train_y, counts)
        held = holdout_indices(train_y, keep, HOLDOUT_PER_CLASS)
        return LongTailData(self.name, self._pad(train_x[keep]), train_y[keep], self._pad(test_x), test_y, counts,
                            self.mean, self.std, self._pad(train_x[held]), train_y[held])

    def _pad(self, x: np.ndarray) -> np.ndarray:
        if self.pad_to is None or x.shape[-1] == self.pad_to:
            return np.ascontiguousarray(x)
        before = (self.pad_to - x.shape[-1]) // 2
        after = self.pad_to - x.shape[-1] - before
        return np.pad(x, ((0, 0), (0, 0), (before, after), (before, after)))


DATASETS = {
    info.name: info
    for info in [
        DatasetInfo(
            "cifar10_lt", "CIFAR-10-LT (Cao et al. 2019 construction), 10 classes, n_max 5000",
            "cifar", 10, 5000, lambda root: sources.read_cifar("cifar10", root), display_name="CIFAR-10-LT",
            fetch=partial(sources.fetch_cifar, "cifar10"),
        ),
        DatasetInfo(
            "cifar100_lt", "CIFAR-100-LT (Cao et al. 2019 construction), 100 classes, n_max 500",
            "cifar", 100, 500, lambda root: sources.read_cifar("cifar100", root), display_name="CIFAR-100-LT",
            fetch=partial(sources.fetch_cifar, "cifar100"),
        ),
        DatasetInfo(
            "fashion_mnist_lt", "Fashion-MNIST-LT, same construction, 10 classes, n_max 6000, padded to 32x32",
            "cifar", 10, 6000, sources.read_fashion_mnist, FASHION_MEAN, FASHION_STD, pad_to=32,
            display_name="Fashion-MNIST-LT", fetch=sources.fetch_fashion_mnist,
        ),
    ]
}
