"""Long-tailed datasets of image files, published with their splits: ImageNet-LT and Places-LT
(OLTR's split files) and iNaturalist 2018 (its JSON annotations).

Where they live: by default `<data root>/<dataset name>/` holds the split files, and the
images they name are relative to it. Either can live elsewhere: per dataset, `image_root`,
`split_dir`, `train_file`, `eval_file` and `val_file` come from a sweep config's `[data.<name>]` table or
`--data-option <name>.<key>=<value>` (relative paths are under the data root). They travel
with the data root in the run's context (ltbench.run_context), to jobs and to every rank.
They say where files are, not what a run is, so they are not part of the run's spec.

The validation split every choice is made on: ImageNet-LT's and Places-LT's official lists
(`*_val.txt`, 20 images a class, 20k and 7.3k images, from the source's training images
and none in the long-tailed training list), which OLTR ships beside the training and test lists. iNaturalist
2018 has none: its `val2018.json` is the split every paper reports as the test set, so a
validation split is carved from the training images instead (`INAT_VAL_KEEPS`).
"""

import difflib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ltbench.data.datasets import DatasetInfo, TrainingSplitFacts, check_splits
from ltbench.data.inat import read_inat_json, read_inat_names
from ltbench.data.profiles import carved_validation, select_long_tail
from ltbench.data.sources import data_root
from ltbench.data.split_files import SHOWN, folder_class_names, read_split_file
from ltbench.errors import UserError, unknown_name

OPTION_KEYS = ("image_root", "split_dir", "train_file", "eval_file", "val_file")  # SplitFiles' fields of the same names

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# classifier-balancing normalises iNaturalist with its own statistics
INAT_MEAN, INAT_STD = (0.466, 0.471, 0.380), (0.195, 0.194, 0.192)


@dataclass
class ImageFileData(TrainingSplitFacts):
    """A training split and the evaluation split as image paths and labels; the fields of
    LongTailData, with paths (bytes, relative to `root`) where that has pixels, so the
    trainer and the methods see one shape."""

    name: str
    root: Path
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray  # the split the papers report: test (ImageNet-LT, Places-LT), val (iNaturalist)
    test_y: np.ndarray
    class_counts: list[int]
    mean: tuple
    std: tuple
    in_chans: int = 3
    class_names: list[str] | None = None  # as the dataset's files name the classes; None where they do not
    # the training images' lines (entries) of the training split file; `ltbench split` exports them
    train_indices: np.ndarray | None = None
    # the validation split (ltbench.data.datasets.LongTailData's val_*), paths as train_x's;
    # val_indices are lines of the validation list, or of the training list where carved from it
    val_x: np.ndarray | None = None
    val_y: np.ndarray | None = None
    val_indices: np.ndarray | None = None


@dataclass(frozen=True)
class SplitFiles:
    """One dataset's files: where they are and how they read. Called with the data root, it
    returns (train_x, train_y, eval_x, eval_y) once everything it can check cheaply holds:
    the files exist, the labels are in range and the training split has every class.
    Whether each image decodes is found out when the loader reads it. Paths are under the
    data root unless absolute; `located` moves them where a sweep's data options say."""

    dataset: str
    num_classes: int  # the published number; every label must lie below it
    train_file: str
    eval_file: str
    parse: Callable  # split file -> (relative paths, labels)
    names: Callable | None = None  # training split file -> {class id: name}, or None where it names none
    image_root: str = ""  # "": the dataset's name, the folder of the default layout
    split_dir: str = ""  # the same
    val_file: str = ""  # the official validation list; "": none, the validation split is carved from training

    def located(self, options: dict | None) -> "SplitFiles":
        """These files where `options` ({image_root, split_dir, train_file, eval_file}) put them."""
        return replace(self, **(options or {}))

    def class_names(self, root, num_classes: int) -> list[str] | None:
        """The names of classes 0..num_classes-1, or None unless the files name every one."""
        names = self.names(self.files(root)[0]) if self.names is not None else None
        if not names or any(c not in names for c in range(num_classes)):
            return None
        return [names[c] for c in range(num_classes)]

    def images(self, root=None) -> Path:
        return data_root(root) / Path(self.image_root or self.dataset).expanduser()

    def files(self, root=None) -> tuple[Path, Path]:
        return self._split_dir(root) / self.train_file, self._split_dir(root) / self.eval_file

    def _split_dir(self, root) -> Path:
        return data_root(root) / Path(self.split_dir or self.dataset).expanduser()

    def validation(self, root=None) -> tuple[np.ndarray, np.ndarray]:
        """(paths, labels) of the official validation list, checked as the other two are."""
        path = self._split_dir(root) / self.val_file
        if not path.is_file():
            raise UserError(f"{self.dataset}: validation split file {path} not found",
                            hint=f"{self.val_file} ships with the dataset's training and test lists; put it "
                            f"beside them, or point at it with --data-option {self.dataset}.val_file=FILE")
        paths, labels = self.parse(path)
        out = [f"{p} (label {y})" for p, y in zip(paths, labels) if not 0 <= y < self.num_classes]
        if out:
            raise UserError(f"{path}: {len(out)} label(s) out of range 0..{self.num_classes - 1} for "
                            f"{self.dataset}: {_first(out)}", hint="is this the right split file for the dataset?")
        _check_images_exist(self.images(root), paths, path)
        return np.array([os.fsencode(p) for p in paths]), np.array(labels, dtype=np.int64)

    def find(self, root=None) -> None:
        """The split files and the image root exist (a UserError says which does not); the
        cheap part of the check, for `ltbench run --dry-run`."""
        image_root, (train_file, eval_file) = self.images(root), self.files(root)
        val_file = (self._split_dir(root) / self.val_file,) if self.val_file else ()
        for path in (train_file, eval_file, *val_file):
            if not path.is_file():
                raise UserError(f"{self.dataset}: split file {path} not found", hint=self._layout_hint(root))
        if not image_root.is_dir():
            raise UserError(f"{self.dataset}: image root {image_root} is not a folder", hint=self._layout_hint(root))

    def __call__(self, root=None):
        self.find(root)
        image_root, (train_file, eval_file) = self.images(root), self.files(root)
        train_x, train_y = self.parse(train_file)
        eval_x, eval_y = self.parse(eval_file)
        self._check_labels(train_file, train_x, train_y, eval_file, eval_x, eval_y)
        for path, paths in ((train_file, train_x), (eval_file, eval_x)):
            _check_images_exist(image_root, paths, path)
        encode = lambda paths: np.array([os.fsencode(p) for p in paths])  # noqa: E731
        # bytes, not str: numpy stores str at 4 bytes a character (iNaturalist's 440k paths)
        return encode(train_x), np.array(train_y, dtype=np.int64), encode(eval_x), np.array(eval_y, dtype=np.int64)

    def _check_labels(self, train_file, train_x, train_y, eval_file, eval_x, eval_y) -> None:
        for path, paths, labels in ((train_file, train_x, train_y), (eval_file, eval_x, eval_y)):
            out = [f"{p} (label {y})" for p, y in zip(paths, labels) if not 0 <= y < self.num_classes]
            if out:
                raise UserError(f"{path}: {len(out)} label(s) out of range 0..{self.num_classes - 1} for "
                                f"{self.dataset}: {_first(out)}", hint="is this the right split file for the dataset?")
        counts = np.bincount(train_y)
        empty = np.flatnonzero(counts == 0).tolist()
        if empty:
            raise UserError(f"{train_file}: class(es) {_first([str(c) for c in empty])} have no training image",
                            hint="class ids must run from 0 without gaps over the training split")
        unseen = [f"{p} (label {y})" for p, y in zip(eval_x, eval_y) if y >= len(counts)]
        if unseen:
            raise UserError(f"{eval_file}: {len(unseen)} image(s) of classes the training split lacks: {_first(unseen)}")

    def _layout_hint(self, root) -> str:
        train_file, eval_file = self.files(root)
        names = ", ".join(f.name for f in (train_file, eval_file)) + (f" and {self.val_file}" if self.val_file else "")
        return (f"expected {names} in {train_file.parent} and the images under "
                f"{self.images(root)}; point elsewhere with --data-option {self.dataset}.image_root=DIR "
                f"(and split_dir, train_file, eval_file, val_file), or pass --data-root")


def _first(items: list[str]) -> str:
    return ", ".join(items[:SHOWN]) + (" ..." if len(items) > SHOWN else "")


def _check_images_exist(image_root: Path, paths: list[str], listed_in: Path) -> None:
    # one directory listing per folder, not one stat per image: iNaturalist lists 460k
    # images in 8k folders, and on a network file system the difference is minutes
    listings, missing = {}, []
    for relative in paths:
        folder, _, name = relative.rpartition("/")
        if folder not in listings:
            try:
                listings[folder] = set(os.listdir(image_root / folder))
            except (FileNotFoundError, NotADirectoryError):
                listings[folder] = set()
        if name not in listings[folder]:
            missing.append(relative)
    if missing:
        raise UserError(f"{len(missing)} of {len(paths)} image(s) listed in {listed_in} are missing under "
                        f"{image_root}: {_first(missing)}",
                        hint="finish the download, or point --data-option DATASET.image_root at the folder the "
                        "split file's paths are relative to")


@dataclass(frozen=True)
class ImageFileDataset(DatasetInfo):
    """A dataset whose long-tailed training split is published: `build` takes it as it is
    (imbalance factor and profile are the published ones), or caps every class at `n_max`
    images to run a reduced one."""

    def load(self, root) -> tuple:
        splits = self.read(root)
        # the published number of classes bounds the labels; a reduced copy may have fewer classes
        check_splits(self.name, self.num_classes, *splits, images=False, every_class=False)
        return splits

    def located(self, options: dict | None) -> "ImageFileDataset":
        return replace(self, read=self.read.located(options)) if options else self

    def missing(self, root) -> UserError | None:
        try:
            train_y = self.load(root)[1]
            self.read.class_names(root, len(np.bincount(train_y)))
            if self.read.val_file:
                self.read.validation(root)
        except UserError as exc:
            return exc
        return None

    def build(self, root, imbalance_factor: float | None = None, profile: str = "exp",
              n_max: int | None = None, val_per_class: int | None = None) -> ImageFileData:
        """The published training split (every class capped at `n_max`, where given), the test
        split, and the validation split: at most `val_per_class` (unset: the dataset's own)
        images a class of the official list, or carved from the training split where there is
        none (those images then leave it)."""
        train_x, train_y, test_x, test_y = self.load(root)
        per_class = val_per_class or self.val_per_class
        keep = np.arange(len(train_y))
        if self.read.val_file:
            val_x, val_y = self.read.validation(root)
            # the first of each class in the list's order: a larger val_per_class takes the whole list
            val = _first_per_class(val_y, per_class)
            val_x, val_y = val_x[val], val_y[val]
        else:
            val = carved_validation(train_y, self.num_classes, per_class, INAT_VAL_KEEPS)
            val_x, val_y = train_x[val], train_y[val]
            keep = np.setdiff1d(keep, val)
        counts = np.bincount(train_y[keep])
        if n_max:
            # the images kept are chosen as the CIFAR-LT construction chooses them
            counts = np.minimum(counts, n_max)
            keep = keep[select_long_tail(train_y[keep], counts.tolist())]
        unseen = np.flatnonzero(val_y >= len(counts))
        if len(unseen):
            raise UserError(f"{self.name}: {len(unseen)} validation image(s) of classes the training split lacks: "
                            f"{_first([os.fsdecode(val_x[i]) for i in unseen])}")
        return ImageFileData(self.name, self.read.images(root), train_x[keep], train_y[keep], test_x, test_y,
                             counts.tolist(), self.mean, self.std, class_names=self.read.class_names(root, len(counts)),
                             train_indices=keep, val_x=val_x, val_y=val_y, val_indices=val)


def _first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Positions of the first `per_class` images of each class, in order."""
    rank = np.zeros(len(labels), dtype=np.int64)
    seen: dict[int, int] = {}
    for i, label in enumerate(labels.tolist()):
        rank[i] = seen.get(label, 0)
        seen[label] = rank[i] + 1
    return np.flatnonzero(rank < per_class)


def check_dataset_options(options: dict) -> None:
    """{dataset: {key: value}} from a config's [data.*] tables and --data-option."""
    for name, table in options.items():
        if name not in IMAGE_DATASETS:
            raise unknown_name("dataset with data options", name, list(IMAGE_DATASETS))
        if not isinstance(table, dict):
            raise UserError(f"data options of {name} should be a table of {', '.join(OPTION_KEYS)}")
        for key, value in table.items():
            if key not in OPTION_KEYS:
                close = difflib.get_close_matches(key, OPTION_KEYS, n=1)
                raise UserError(f"unknown data option {name}.{key}" + (f"; did you mean {name}.{close[0]}?" if close else ""),
                                hint=f"the data options of a dataset: {', '.join(OPTION_KEYS)}")
            if not isinstance(value, str) or not value.strip():
                raise UserError(f"data option {name}.{key} should be a path, got {value!r}")


# The decoupling protocol (Kang et al. 2020; classifier-balancing's feat_uniform configs): SGD
# m 0.9, batch 512, lr 0.2 cosine to 0 without warm-up, 224 px; its ImageNet-LT and Places-LT
# training views add ColorJitter(0.4, 0.4, 0.4, 0), its iNaturalist ones do not.
IMAGENET_LT_PROTOCOL = {"backbone": "resnext50_32x4d", "epochs": 90, "batch_size": 512, "lr": 0.2,
                        "schedule": "cosine", "warmup_epochs": 0, "weight_decay": 5e-4, "image_size": 224,
                        "train_color_jitter": 0.4}
INAT_PROTOCOL = {**IMAGENET_LT_PROTOCOL, "backbone": "resnet50", "weight_decay": 1e-4, "train_color_jitter": 0.0}
# where they come from (`ltbench list METHOD`): in both configs L15 lr 0.2 and wd, L1 and L8
# cosine to 0, L26-27 backbone and batch 512, L34 90 epochs
IMAGENET_LT_SOURCE = "classifier-balancing config/ImageNet_LT/feat_uniform.yaml; data/dataloader.py (views)"
INAT_SOURCE = "classifier-balancing config/iNaturalist18/feat_unifrom.yaml; data/dataloader.py (views)"
# (unconfirmed) decoupling starts Places-LT from an ImageNet-pretrained ResNet-152 and trains
# OLTR's stage 1 (30 epochs, batch 256); ltbench trains from scratch, so results differ.
PLACES_LT_PROTOCOL = {**IMAGENET_LT_PROTOCOL, "backbone": "resnet152", "epochs": 30, "batch_size": 256, "lr": 0.1}
PLACES_LT_SOURCE = "unconfirmed: OLTR's Places-LT stage 1 as decoupling describes it (Kang et al. 2020)"
# iNaturalist 2018's validation split is carved from its training images: 3 a class (as many
# as its test split has) from every class that keeps at least 20 after giving them. The
# few-shot classes (fewer than 20 images, the classifier-balancing rule) keep every image, so
# the tail that the benchmark measures is the published one, and a class gives at most 3 of
# its 23 or more images; validation then has no few-shot class.
INAT_VAL_KEEPS = 20


def _oltr(name: str, title: str, summary: str, num_classes: int, n_max: int, factor: float, protocol: dict,
          protocol_source: str, val_per_class: int):
    """A dataset of OLTR's published splits (Liu et al. 2019): `<Title>_train.txt` / `_test.txt`,
    and `_val.txt`, the validation list of `val_per_class` images a class."""
    prefix = title.replace("-", "_")
    split = SplitFiles(name, num_classes, f"{prefix}_train.txt", f"{prefix}_test.txt", read_split_file,
                       folder_class_names, val_file=f"{prefix}_val.txt")
    return ImageFileDataset(name, summary, name, num_classes, n_max, split, IMAGENET_MEAN, IMAGENET_STD,
                            fixed_imbalance_factor=factor, protocol=protocol, display_name=title,
                            protocol_source=protocol_source, val_per_class=val_per_class,
                            train_order=f"the lines of the training split file ({prefix}_train.txt), in file order",
                            val_order=f"the lines of the validation split file ({prefix}_val.txt), in file order")


IMAGE_DATASETS = {
    info.name: info
    for info in [
        _oltr("imagenet_lt", "ImageNet-LT", "ImageNet-LT (Liu et al. 2019): 1000 classes, 115.8k training images "
              "(1280 to 5 a class), evaluated on the 50k test split, validated on the 20k val split", 1000, 1280,
              256.0, IMAGENET_LT_PROTOCOL, IMAGENET_LT_SOURCE, val_per_class=20),
        _oltr("places_lt", "Places-LT", "Places-LT (Liu et al. 2019): 365 classes, 62.5k training images (4980 to 5 "
              "a class), evaluated on the 36.5k test split, validated on the 7.3k val split", 365, 4980, 996.0,
              PLACES_LT_PROTOCOL, PLACES_LT_SOURCE, val_per_class=20),
        ImageFileDataset(
            "inat2018", "iNaturalist 2018: 8142 classes, 437.5k training images (1000 to 2 a class), "
            "evaluated on the 24.4k val split, validated on 3 training images a class carved from the classes "
            "with 23 or more", "inat2018", 8142, 1000,
            SplitFiles("inat2018", 8142, "train2018.json", "val2018.json", read_inat_json, read_inat_names),
            INAT_MEAN, INAT_STD, fixed_imbalance_factor=500.0, protocol=INAT_PROTOCOL, protocol_source=INAT_SOURCE,
            display_name="iNaturalist 2018",
            train_order="the `images` of the training annotation file (train2018.json), in file order",
            val_per_class=3,
        ),
    ]
}
