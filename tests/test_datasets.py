"""The CIFAR and Fashion-MNIST code paths on files shaped exactly like the real ones."""

import gzip
import pickle
import struct

import numpy as np
import pytest

from cifar_files import LAYOUT, class_names, write_tiny_cifar
from ltbench.data.datasets import DATASETS
from ltbench.errors import UserError


def write_cifar(root, name):
    """The torchvision/Krizhevsky pickle layout, with generated pixels."""
    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder, files, key, classes = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], b"labels", 10
        test_files = ["test_batch"]
    else:
        folder, files, key, classes = root / "cifar-100-python", ["train"], b"fine_labels", 100
        test_files = ["test"]
    folder.mkdir(parents=True)
    per_file = 50000 // len(files)
    labels = np.tile(np.arange(classes), 50000 // classes)
    rng.shuffle(labels)
    for i, f in enumerate(files):
        part = labels[i * per_file : (i + 1) * per_file]
        data = rng.integers(0, 256, (len(part), 3072), dtype=np.uint8)
        with open(folder / f, "wb") as fh:
            pickle.dump({b"data": data, key: part.tolist()}, fh)
    test_labels = np.tile(np.arange(classes), 10000 // classes)
    with open(folder / test_files[0], "wb") as fh:
        pickle.dump({b"data": np.zeros((10000, 3072), np.uint8), key: test_labels.tolist()}, fh)


@pytest.mark.parametrize("name, dataset, sizes", [
    ("cifar10", "cifar10_lt", {100: 12406, 50: 13996, 10: 20431}),
    ("cifar100", "cifar100_lt", {100: 10847, 50: 12608, 10: 19573}),
])
def test_cifar_lt_built_from_the_standard_files(tmp_path, name, dataset, sizes):
    write_cifar(tmp_path, name)
    info = DATASETS[dataset]
    for factor, total in sizes.items():
        data = info.build(tmp_path, factor)
        assert data.train_x.shape == (total, 3, 32, 32) and data.train_x.dtype == np.uint8
        assert np.bincount(data.train_y).tolist() == data.class_counts
        assert data.test_x.shape == (10000, 3, 32, 32)
        assert np.bincount(data.test_y).tolist() == [10000 // info.num_classes] * info.num_classes
    step = info.build(tmp_path, 100, "step")
    assert step.class_counts[0] == info.n_max and step.class_counts[-1] == info.n_max // 100


def test_missing_cifar_says_how_to_get_it(tmp_path, monkeypatch):
    import ltbench.data.sources as sources

    downloads = []
    monkeypatch.setattr(sources, "_download_cifar", lambda name, root: downloads.append(name))  # no network here
    with pytest.raises(UserError, match="cifar10 not found") as info:
        DATASETS["cifar10_lt"].build(tmp_path, 100)
    assert downloads == []  # a run (and its dry run) reads what is there; fetch-data downloads
    assert DATASETS["cifar10_lt"].missing(tmp_path).hint == info.value.hint and downloads == []
    with pytest.raises(UserError, match="cifar10 not found"):
        DATASETS["cifar10_lt"].fetch(tmp_path)
    assert downloads == ["cifar10"]
    assert f"ltbench fetch-data cifar10_lt --data-root {tmp_path}" in info.value.hint
    assert "torchvision" not in info.value.hint


@pytest.mark.parametrize("name, dataset", [("cifar10", "cifar10_lt"), ("cifar100", "cifar100_lt")])
def test_cifar_pickled_again_by_python3_reads_as_the_original(tmp_path, name, dataset):
    """Python 3 pickles the dicts' keys and the class names as str, the original files as bytes;
    torchvision reads both, and so does the reader that runs no code."""
    write_tiny_cifar(tmp_path / "original", name, per_class=12)
    write_tiny_cifar(tmp_path / "python3", name, per_class=12, python3=True)
    pickled = (tmp_path / "python3" / LAYOUT[name][0] / LAYOUT[name][2]).read_bytes()
    assert b"\x8c\x04data" in pickled  # "data" as a str key (SHORT_BINUNICODE), not bytes
    original, again = (DATASETS[dataset].build(tmp_path / folder, 10, n_max=10) for folder in ("original", "python3"))
    assert again.split_fingerprint == original.split_fingerprint
    assert again.class_names == original.class_names == class_names(name)
    assert DATASETS[dataset].missing(tmp_path / "python3") is None


def write_idx(path, array):
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_idx_files_padded_to_32(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    labels = np.tile(np.arange(10), 6000)
    # decompressed, under torchvision's names, as fetch-data stores them
    write_idx(raw / "train-images-idx3-ubyte", np.full((60000, 28, 28), 7))
    write_idx(raw / "train-labels-idx1-ubyte", labels)
    write_idx(raw / "t10k-images-idx3-ubyte", np.full((10000, 28, 28), 7))
    write_idx(raw / "t10k-labels-idx1-ubyte", np.tile(np.arange(10), 1000))
    data = DATASETS["fashion_mnist_lt"].build(tmp_path, 100)
    assert sum(data.class_counts) == len(data.train_y) and data.class_counts[0] == 6000
    assert data.train_x.shape[1:] == (1, 32, 32)
    assert data.train_x[0, 0, 0, 0] == 0 and data.train_x[0, 0, 2, 2] == 7  # 2-pixel zero border
    # validation: 50 a class of what the construction left out; class 0 kept all 6000, so has none
    assert np.bincount(data.val_y, minlength=10).tolist() == [0] + [50] * 9
    assert data.val_x.shape[1:] == (1, 32, 32) and not np.isin(data.val_indices, data.train_indices).any()


def test_the_validation_split_is_the_end_of_each_class_permutation_at_every_imbalance_factor():
    from ltbench.data.profiles import class_counts, left_out_validation, select_long_tail

    labels = np.repeat(np.arange(3), [10, 10, 10])
    keep = select_long_tail(labels, [10, 6, 2])
    val = left_out_validation(labels, [10, 6, 2], per_class=4)
    assert not np.isin(val, keep).any() and np.bincount(labels[val], minlength=3).tolist() == [0, 4, 4]
    # a class leaving out fewer than per_class gives what it leaves out
    assert np.bincount(labels[left_out_validation(labels, [10, 8, 2], per_class=4)]).tolist() == [0, 2, 4]
    # the same images whatever the imbalance factor, where a class leaves them out
    other = left_out_validation(labels, [10, 3, 1], per_class=4)
    assert np.array_equal(other, val)
    labels = np.repeat(np.arange(10), 100)
    for factor in (1, 10, 90):
        counts = class_counts(10, 90, factor)
        kept, val = select_long_tail(labels, counts), left_out_validation(labels, counts, per_class=10)
        assert not np.isin(val, kept).any() and np.bincount(labels[val], minlength=10).tolist() == [10] * 10


def test_missing_fashion_mnist_is_explained(tmp_path):
    with pytest.raises(UserError, match="Fashion-MNIST not found") as info:
        DATASETS["fashion_mnist_lt"].build(tmp_path, 100)
    assert "fetch-data" in str(info.value)


def test_gzipped_idx_reads_like_plain(tmp_path):
    from ltbench.data.sources import read_idx

    array = np.arange(24).reshape(2, 3, 4)
    write_idx(tmp_path / "a-idx3-ubyte", array)
    write_idx(tmp_path / "a-idx3-ubyte.gz", array)
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte"), read_idx(tmp_path / "a-idx3-ubyte.gz"))


def test_truncated_idx_file_is_reported(tmp_path):
    from ltbench.data.sources import read_idx

    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(struct.pack(">HBB", 0, 8, 1) + struct.pack(">I", 100) + b"\x00" * 10)
    with pytest.raises(UserError, match="truncated or corrupt"):
        read_idx(path)
