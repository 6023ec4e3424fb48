"""Tiny datasets in the published formats of ImageNet-LT / Places-LT (OLTR split files) and
iNaturalist 2018 (JSON annotations): a few hundred small JPEGs whose class is their colour,
so that a short run learns something."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

TRAIN_COUNTS = [60, 36, 22, 13, 8, 5]  # a long tail over six classes
EVAL_PER_CLASS = 8
VAL_PER_CLASS = 4  # the official validation lists' images a class, in the OLTR datasets
SIDE = 40
OLTR_PREFIX = {"imagenet_lt": "ImageNet_LT", "places_lt": "Places_LT"}


def class_image(label: int, rng: np.random.Generator, side: int = SIDE) -> Image.Image:
    hue = np.array([(label * 83) % 256, (label * 157 + 60) % 256, (label * 211 + 120) % 256], dtype=np.float64)
    pixels = hue + rng.normal(0, 25, size=(side, side + 8, 3))  # not square: crops see both sides
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _write_images(root: Path, folder: str, counts: list[int], rng) -> list[tuple[str, int]]:
    entries = []
    for label, n in enumerate(counts):
        for i in range(n):
            relative = f"{folder}/c{label:02d}/{i:04d}.jpg"
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            class_image(label, rng).save(root / relative, quality=90)
            entries.append((relative, label))
    return entries


def make_oltr(data_root: Path, name: str = "imagenet_lt", counts=TRAIN_COUNTS, per_class: int = EVAL_PER_CLASS) -> Path:
    """<data_root>/<name>/ with train/, test/ and val/ images and the three split files. As in
    OLTR's lists, the validation images are neither training nor test images."""
    root = data_root / name
    rng = np.random.default_rng(0)
    prefix = OLTR_PREFIX[name]
    splits = {"train": _write_images(root, "train", counts, rng),
              "test": _write_images(root, "test", [per_class] * len(counts), rng),
              "val": _write_images(root, "val", [VAL_PER_CLASS] * len(counts), rng)}
    for split, entries in splits.items():
        (root / f"{prefix}_{split}.txt").write_text("".join(f"{p} {y}\n" for p, y in entries))
    return root


def make_inat(data_root: Path, counts=TRAIN_COUNTS, per_class: int = EVAL_PER_CLASS) -> Path:
    """<data_root>/inat2018/ with train_val2018/ images, train2018.json and val2018.json."""
    root = data_root / "inat2018"
    rng = np.random.default_rng(1)
    categories = [{"id": c, "name": f"species {c}", "supercategory": "Plantae"} for c in range(len(counts))]
    next_id = 0
    for split, split_counts in (("train", counts), ("val", [per_class] * len(counts))):
        entries = _write_images(root, f"train_val2018/Plantae/{split}", split_counts, rng)
        ids = range(next_id, next_id + len(entries))
        next_id += len(entries)
        document = {
            "images": [{"id": i, "file_name": p, "width": SIDE + 8, "height": SIDE} for i, (p, _) in zip(ids, entries)],
            "annotations": [{"id": i, "image_id": i, "category_id": y} for i, (_, y) in zip(ids, entries)],
            "categories": categories,
        }
        (root / f"{split}2018.json").write_text(json.dumps(document))
    return root


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared CPU: a second OpenMP thread only waits for the first.
    Autouse in every module that imports it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """One tiny copy of each dataset, shared by a module's tests."""
    root = tmp_path_factory.mktemp("data")
    make_oltr(root, "imagenet_lt")
    make_oltr(root, "places_lt")
    make_inat(root)
    return root
