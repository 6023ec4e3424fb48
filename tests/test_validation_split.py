"""The validation split of every built-in dataset: apart from the training and the test
images, fixed by the dataset and its construction (never by the run's seed), and leaving the
long-tailed training set as it was published."""

import os

import numpy as np
import pytest

from cifar_files import write_tiny_cifar
from image_data import TRAIN_COUNTS, VAL_PER_CLASS, make_inat, make_oltr
from ltbench.data.datasets import DATASETS
from ltbench.data.image_datasets import IMAGE_DATASETS, INAT_VAL_KEEPS
from ltbench.data.profiles import class_counts, left_out_validation, select_long_tail


def ldam_drw_selection(labels: np.ndarray, counts: list[int]) -> np.ndarray:
    """LDAM-DRW's `gen_imbalanced_data` as its code reads (imbalance_cifar.py): numpy's global
    RNG seeded with 0, each class's indices shuffled in class order, the first n_i kept."""
    state = np.random.get_state()
    try:
        np.random.seed(0)
        kept = []
        for cls, n in enumerate(counts):
            idx = np.where(labels == cls)[0]
            np.random.shuffle(idx)
            kept.append(idx[:n])
        return np.concatenate(kept)
    finally:
        np.random.set_state(state)


def tiny_cifar(root, name):
    write_tiny_cifar(root, name, per_class=30)
    return DATASETS[f"{name}_lt"].build(root, 10, n_max=25)


# how each built-in dataset is built here: from files shaped like the real ones, or the real
# Fashion-MNIST; a built-in dataset without an entry fails the test below
BUILDERS = {
    "cifar10_lt": lambda root, fashion: tiny_cifar(root, "cifar10"),
    "cifar100_lt": lambda root, fashion: tiny_cifar(root, "cifar100"),
    "fashion_mnist_lt": lambda root, fashion: DATASETS["fashion_mnist_lt"].build(fashion, 100),
    "imagenet_lt": lambda root, fashion: IMAGE_DATASETS["imagenet_lt"].build(make_oltr(root, "imagenet_lt").parent),
    "places_lt": lambda root, fashion: IMAGE_DATASETS["places_lt"].build(make_oltr(root, "places_lt").parent),
    "inat2018": lambda root, fashion: IMAGE_DATASETS["inat2018"].build(make_inat(root).parent),
}


@pytest.mark.parametrize("name", [*DATASETS, *IMAGE_DATASETS])
def test_train_validation_and_test_are_disjoint_and_the_training_set_is_unchanged(name, tmp_path, fashion_mnist):
    assert name in BUILDERS, f"{name}: a built-in dataset the validation-split test does not build"
    data = BUILDERS[name](tmp_path, fashion_mnist)
    assert len(data.val_y) > 0 and len(data.val_x) == len(data.val_y) == len(data.val_indices)
    if name in DATASETS:
        root = fashion_mnist if name == "fashion_mnist_lt" else tmp_path
        source_y = DATASETS[name].load(root)[1]
        # the training set is LDAM-DRW's, image for image
        assert np.array_equal(data.train_indices, ldam_drw_selection(source_y, data.class_counts))
        # train and validation are images of the source's training split, the test set its test split
        assert not np.isin(data.val_indices, data.train_indices).any()
        assert np.array_equal(source_y[data.val_indices], data.val_y)
        return
    # the image-file datasets: every image is a file, named once across the three splits
    train, val, test = ({os.fsdecode(p) for p in x} for x in (data.train_x, data.val_x, data.test_x))
    assert len(train) == len(data.train_x) and not train & val and not train & test and not val & test
    published_y = IMAGE_DATASETS[name].read(data.root.parent)[1]
    if name == "inat2018":
        # carved from training: the classes that keep 20 or more give 3, the rest keep every image
        carved = np.bincount(data.val_y, minlength=len(TRAIN_COUNTS)).tolist()
        assert carved == [3 if n - 3 >= INAT_VAL_KEEPS else 0 for n in TRAIN_COUNTS]
        assert data.class_counts == [n - c for n, c in zip(TRAIN_COUNTS, carved)]
        assert sorted([*data.train_indices, *data.val_indices]) == list(range(len(published_y)))
    else:
        # the official list, the training list whole
        assert np.array_equal(data.train_indices, np.arange(len(published_y)))
        assert np.bincount(data.val_y).tolist() == [VAL_PER_CLASS] * len(TRAIN_COUNTS)
        assert all(p.startswith("val/") for p in val)


@pytest.mark.parametrize("name, n_max, sizes", [("cifar10_lt", 5000, {100: 12406, 50: 13996, 10: 20431}),
                                                ("cifar100_lt", 500, {100: 10847, 50: 12608, 10: 19573})])
def test_the_published_cifar_lt_sizes_hold_beside_a_validation_split(name, n_max, sizes):
    classes = 10 if name == "cifar10_lt" else 100
    # CIFAR's training labels at full size, in an arbitrary fixed order
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(classes), n_max))
    per_class = DATASETS[name].val_per_class
    for factor, size in sizes.items():
        counts = class_counts(classes, n_max, factor)
        kept = select_long_tail(labels, counts)
        val = left_out_validation(labels, counts, per_class)
        assert len(kept) == size and np.array_equal(kept, ldam_drw_selection(labels, counts))
        assert not np.isin(val, kept).any()
        # per_class of what each class leaves out, or all of it: the head class keeps all its images, so
        # has none to give (CIFAR-100-LT at IF 10 leaves 12 of class 1's 500 out)
        given = np.bincount(labels[val], minlength=classes).tolist()
        assert given == [min(per_class, n_max - n) for n in counts] and given[0] == 0


def test_the_validation_split_depends_on_the_dataset_only(tmp_path):
    write_tiny_cifar(tmp_path, per_class=30)
    info = DATASETS["cifar10_lt"]
    a, b = info.build(tmp_path, 10, n_max=25), info.build(tmp_path, 10, n_max=25)
    assert np.array_equal(a.val_indices, b.val_indices) and a.split_fingerprint == b.split_fingerprint
    # another imbalance factor keeps more of each class, so leaves out fewer: the last of the
    # same permutations, so a subset of the same images
    other = info.build(tmp_path, 5, n_max=25)
    assert len(other.val_y) < len(a.val_y) and np.isin(other.val_indices, a.val_indices).all()
    # its size is a protocol setting, and in the fingerprint
    smaller = info.build(tmp_path, 10, n_max=25, val_per_class=2)
    assert np.bincount(smaller.val_y, minlength=10).tolist() == [2] * 10
    assert smaller.split_fingerprint != a.split_fingerprint


def test_a_missing_validation_list_is_named_with_where_to_put_it(tmp_path):
    root = make_oltr(tmp_path, "places_lt")
    (root / "Places_LT_val.txt").unlink()
    problem = IMAGE_DATASETS["places_lt"].missing(tmp_path)
    assert "Places_LT_val.txt not found" in str(problem) and "val_file" in problem.hint
