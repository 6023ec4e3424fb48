"""Long-tailed datasets built the way the papers build them, each with its balanced test set."""

import hashlib
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Callable

import numpy as np

from ltbench.data import sources
from ltbench.data.profiles import class_counts, left_out_validation, select_long_tail
from ltbench.data.split_files import SHOWN
from ltbench.errors import UserError

# LDAM-DRW normalises CIFAR-100 with CIFAR-10's statistics too; keep that for fidelity.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)


class TrainingSplitFacts:
    """What a dataset's splits imply, shared by the in-memory and the image-file datasets."""

    @property
    def num_classes(self) -> int:
        return len(self.class_counts)

    @cached_property
    def split_fingerprint(self) -> str:
        return split_fingerprint(self)


@dataclass
class LongTailData(TrainingSplitFacts):
    """A long-tailed training set and a balanced test set, images uint8 NCHW."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_counts: list[int]
    mean: tuple
    std: tuple
    # the validation split every choice is made on (an epoch, tau), disjoint from both; the
    # test transform applies to it. None where a plugin's dataset has none
    val_x: np.ndarray | None = None
    val_y: np.ndarray | None = None
    class_names: list[str] | None = None  # as the dataset's files name the classes; None where they do not
    # where train_x's images are in the source dataset's training split (`ltbench split`
    # exports them, so another codebase can train on the same images); None where unknown
    train_indices: np.ndarray | None = None
    val_indices: np.ndarray | None = None  # the validation images' places in the same split

    @property
    def in_chans(self) -> int:
        return self.train_x.shape[1]


def has_validation(data) -> bool:
    """Whether `data` has a validation image to choose on (a plugin's data may have no split,
    and a construction that keeps every image, CIFAR-LT at IF 1, leaves none over)."""
    return getattr(data, "val_y", None) is not None and len(data.val_y) > 0


def split_fingerprint(data) -> str:
    """A short hash of the training, test and validation splits as a run sees them: images
    (or image paths) and labels, in order. Recorded in the result row and the checkpoint, so a
    changed dataset file cannot pass for the data a run was trained on."""
    digest = hashlib.sha256()
    arrays = [data.train_x, data.train_y, data.test_x, data.test_y]
    if getattr(data, "val_y", None) is not None:  # a plugin's data without one hashes as before
        arrays += [data.val_x, data.val_y]
    for array in arrays:
        array = np.asarray(array)
        if array.dtype == object:  # a plugin's paths as Python strings
            array = np.array([str(item).encode() for item in array.ravel()])
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
    return digest.hexdigest()[:16]


def check_splits(name: str, num_classes: int, train_x, train_y, test_x, test_y, images: bool = True,
                 every_class: bool = True) -> None:
    """What every dataset must satisfy before anything trains on it: both splits present,
    as many images as labels in each, integer labels in 0..num_classes-1, every class (of
    num_classes, or with `every_class` False up to the largest label) in the training split,
    and with `images` uint8 N x C x H x W arrays of one size. A UserError names the first
    offenders."""
    for split, x, y in (("training", train_x, train_y), ("test", test_x, test_y)):
        y = np.asarray(y)
        if len(x) == 0 or y.size == 0:
            raise UserError(f"{name}: the {split} split is empty ({len(x)} images, {y.size} labels)",
                            hint="are all of the dataset's files there, and complete?")
        if len(x) != len(y):
            raise UserError(f"{name}: the {split} split has {len(x)} images but {len(y)} labels",
                            hint="the image and label files do not belong together: are the training and test "
                            "files mixed up, or one of them truncated?")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise UserError(f"{name}: the {split} labels are not one integer per image (shape {y.shape}, {y.dtype})")
        bad = np.flatnonzero((y < 0) | (y >= num_classes))
        if len(bad):
            shown = ", ".join(f"#{i} (label {y[i]})" for i in bad[:SHOWN]) + (" ..." if len(bad) > SHOWN else "")
            raise UserError(f"{name}: {len(bad)} {split} label(s) out of range 0..{num_classes - 1}: {shown}",
                            hint="is this the right file for the dataset? Its labels must be class indices")
        if images:
            x = np.asarray(x)
            if x.ndim != 4 or x.dtype != np.uint8:
                raise UserError(f"{name}: the {split} images are {x.dtype} of shape {x.shape}, "
                                "not uint8 N x C x H x W")
    empty = np.flatnonzero(np.bincount(np.asarray(train_y), minlength=num_classes if every_class else 0) == 0)
    if len(empty):
        raise UserError(f"{name}: class(es) {', '.join(map(str, empty[:SHOWN]))} have no training image",
                        hint="class ids must run from 0 without gaps over the training split")
    if images and np.asarray(train_x).shape[1:] != np.asarray(test_x).shape[1:]:
        raise UserError(f"{name}: training images are {np.asarray(train_x).shape[1:]} but test images "
                        f"{np.asarray(test_x).shape[1:]} (C, H, W)")


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
    protocol_source: str = field(default="", compare=False)  # where `protocol` comes from (`ltbench list METHOD`)
    display_name: str = ""  # as tables print it (CIFAR-10-LT); default: the name
    # how the report groups classes into many / medium / few by training count
    # (ltbench.data.profiles.SHOT_RULES)
    shot_rule: str = "cb"
    # validation images per class (the val_per_class setting's default here): drawn from the
    # images the long-tailed construction leaves out, the same at every imbalance factor
    val_per_class: int = 50
    # (root, allow_apt, log) -> makes the files available under root, for `ltbench fetch-data`;
    # None where the user must bring them (the image-file datasets)
    fetch: Callable | None = field(default=None, repr=False, compare=False)
    # root -> the class names in class-index order, or None where the files name none
    read_class_names: Callable | None = field(default=None, repr=False, compare=False)
    # what the indices `ltbench split` exports index: the training split as `read` returns it
    train_order: str = field(default="the training split in the order the dataset's reader returns it",
                             compare=False)
    # what its validation indices index; "": the same as the training indices (train_order)
    val_order: str = field(default="", compare=False)

    @property
    def title(self) -> str:
        return self.display_name or self.name

    def load(self, root) -> tuple:
        """(train_x, train_y, test_x, test_y) as `read` gives them, checked (check_splits)."""
        splits = self.read(sources.data_root(root))
        check_splits(self.name, self.num_classes, *splits)
        return splits

    def located(self, options: dict | None) -> "DatasetInfo":
        """This dataset with its files where a sweep's data options put them; the constructed
        datasets have one layout (ltbench.data.image_datasets.check_dataset_options)."""
        return self

    def missing(self, root) -> UserError | None:
        """Why a run could not read this dataset under root, or None when it can: what `build`
        reads, read and checked as it reads it. `ltbench run` asks before it trains anything,
        and --dry-run asks the same."""
        try:
            self.load(root)
            self.names(root)
        except UserError as exc:
            return exc
        return None

    def build(self, root, imbalance_factor: float, profile: str = "exp", n_max: int | None = None,
              val_per_class: int | None = None) -> LongTailData:
        """The long-tailed training set, the test set, and `val_per_class` (unset: the
        dataset's own) validation images a class among the images the construction leaves out."""
        train_x, train_y, test_x, test_y = self.load(root)
        counts = class_counts(self.num_classes, n_max or self.n_max, imbalance_factor, profile)
        keep = select_long_tail(train_y, counts)
        val = left_out_validation(train_y, counts, val_per_class or self.val_per_class)
        return LongTailData(self.name, self._pad(train_x[keep]), train_y[keep], self._pad(test_x), test_y, counts,
                            self.mean, self.std, self._pad(train_x[val]), train_y[val],
                            class_names=self.names(root), train_indices=keep, val_indices=val)

    def names(self, root) -> list[str] | None:
        """The class names, in class-index order, or None where the dataset's files name none."""
        if self.read_class_names is None:
            return None
        names = self.read_class_names(sources.data_root(root))
        if names is not None and len(names) != self.num_classes:
            raise UserError(f"{self.name}: its files name {len(names)} classes, the dataset has {self.num_classes}",
                            hint="the class-name file belongs to another dataset or is damaged: fetch the "
                            "dataset again (ltbench fetch-data), or pass --data-root")
        return names

    def _pad(self, x: np.ndarray) -> np.ndarray:
        if self.pad_to is None or x.shape[-1] == self.pad_to:
            return np.ascontiguousarray(x)
        before = (self.pad_to - x.shape[-1]) // 2
        after = self.pad_to - x.shape[-1] - before
        return np.pad(x, ((0, 0), (0, 0), (before, after), (before, after)))


def cifar_lt(source: str, num_classes: int, n_max: int, title: str, val_per_class: int) -> DatasetInfo:
    """CIFAR-10-LT or CIFAR-100-LT: LDAM-DRW's construction over the python-pickle CIFAR files."""
    return DatasetInfo(
        f"{source}_lt", f"{title} (Cao et al. 2019 construction), {num_classes} classes, n_max {n_max}",
        "cifar", num_classes, n_max, partial(sources.read_cifar, source), display_name=title,
        fetch=partial(sources.fetch_cifar, source), read_class_names=partial(sources.cifar_class_names, source), train_order=sources.CIFAR_ORDER[source],
        val_per_class=val_per_class,
    )


DATASETS = {
    info.name: info
    for info in [
        # validation: 500 images for CIFAR-10 (50 a class), 2000 for CIFAR-100 (20 a class), a
        # twentieth and a fifth of the test set: small enough to evaluate every epoch, large
        # enough to tell epochs and taus apart by more than a few images
        cifar_lt("cifar10", 10, 5000, "CIFAR-10-LT", val_per_class=50),
        cifar_lt("cifar100", 100, 500, "CIFAR-100-LT", val_per_class=20),
        DatasetInfo(
            "fashion_mnist_lt", "Fashion-MNIST-LT, same construction, 10 classes, n_max 6000, padded to 32x32",
            "cifar", 10, 6000, sources.read_fashion_mnist, FASHION_MEAN, FASHION_STD, pad_to=32,
            display_name="Fashion-MNIST-LT", fetch=sources.fetch_fashion_mnist, read_class_names=lambda root: list(sources.FASHION_CLASSES), train_order=sources.FASHION_ORDER,
            val_per_class=50,
        ),
    ]
}
