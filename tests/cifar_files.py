"""Tiny copies of CIFAR-10 and CIFAR-100 in the torchvision/Krizhevsky pickle layout (batch
files and the meta file naming the classes), small enough for tests that pass --n-max."""

import pickle
from pathlib import Path

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
LAYOUT = {  # folder, training files, test file, label key, meta file, names key, classes
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels",
                "batches.meta", b"label_names", 10),
    "cifar100": ("cifar-100-python", ["train"], "test", b"fine_labels", "meta", b"fine_label_names", 100),
}


def class_names(name: str) -> list[str]:
    return CIFAR10_NAMES if name == "cifar10" else [f"fine class {c}" for c in range(100)]


def write_tiny_cifar(root: Path, name: str = "cifar10", per_class: int = 30, meta: bool = True,
                     python3: bool = False) -> Path:
    """`per_class` training images of every class spread over the batch files, shuffled, and 5
    test images a class; keys and the meta file's names as bytes, as the original Python 2
    pickles have them, or (`python3`) as str, as a copy pickled again by Python 3 has them.
    Returns the dataset's folder."""
    folder_name, train_files, test_file, key, meta_file, names_key, classes = LAYOUT[name]
    text = (lambda b: b.decode()) if python3 else (lambda b: b)
    folder = Path(root) / folder_name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(classes), per_class))
    images = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    for part, (x, y) in zip(train_files, zip(np.array_split(images, len(train_files)),
                                             np.array_split(labels, len(train_files)))):
        with open(folder / part, "wb") as fh:
            pickle.dump({text(b"data"): x, text(key): y.tolist()}, fh)
    test_labels = np.repeat(np.arange(classes), 5)
    with open(folder / test_file, "wb") as fh:
        pickle.dump({text(b"data"): rng.integers(0, 256, (len(test_labels), 3072), dtype=np.uint8),
                     text(key): test_labels.tolist()}, fh)
    if meta:
        with open(folder / meta_file, "wb") as fh:
            pickle.dump({text(names_key): [text(n.encode()) for n in class_names(name)], text(b"num_vis"): 3072}, fh)
    return folder
