"""Class names come from each dataset's own files and reach per_class.csv and the report."""

import json
import pickle

import numpy as np
import pytest

from cifar_files import class_names, write_tiny_cifar
from image_data import make_inat, make_oltr
from ltbench.data.datasets import DATASETS
from ltbench.data.image_datasets import IMAGE_DATASETS
from ltbench.data.sources import FASHION_CLASSES
from ltbench.errors import UserError


@pytest.mark.parametrize("name, dataset", [("cifar10", "cifar10_lt"), ("cifar100", "cifar100_lt")])
def test_cifar_names_come_from_the_meta_file(tmp_path, name, dataset):
    write_tiny_cifar(tmp_path, name, per_class=12)
    data = DATASETS[dataset].build(tmp_path, 10, n_max=10)
    assert data.class_names == class_names(name)
    assert data.class_names[3] == ("cat" if name == "cifar10" else "fine class 3")


def test_cifar_without_its_meta_file_trains_with_classes_unnamed(tmp_path):
    write_tiny_cifar(tmp_path, meta=False)
    data = DATASETS["cifar10_lt"].build(tmp_path, 10, n_max=20)
    assert data.class_names is None and len(data.train_y) == sum(data.class_counts)


def test_a_damaged_or_foreign_meta_file_is_named(tmp_path):
    folder = write_tiny_cifar(tmp_path)
    (folder / "batches.meta").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="batches.meta is not a CIFAR meta file") as info:
        DATASETS["cifar10_lt"].build(tmp_path, 10, n_max=20)
    assert "delete it" in info.value.hint
    with open(folder / "batches.meta", "wb") as fh:  # CIFAR-100's names in CIFAR-10's folder
        pickle.dump({b"label_names": [b"x"] * 100}, fh)
    with pytest.raises(UserError, match="name 100 classes, the dataset has 10"):
        DATASETS["cifar10_lt"].build(tmp_path, 10, n_max=20)


def test_fashion_mnist_has_its_ten_names(fashion_mnist):
    data = DATASETS["fashion_mnist_lt"].build(fashion_mnist, 10, n_max=30)
    assert data.class_names == list(FASHION_CLASSES)
    assert (data.class_names[0], data.class_names[9]) == ("T-shirt/top", "Ankle boot")


def test_inaturalist_names_from_its_categories_and_categories_json(tmp_path):
    root = make_inat(tmp_path)
    data = IMAGE_DATASETS["inat2018"].build(tmp_path)
    assert data.class_names == [f"species {c}" for c in range(6)]
    # the real names, published later in categories.json, replace the annotation file's
    (root / "categories.json").write_text(json.dumps([{"id": c, "name": f"Genus species{c}"} for c in range(6)]))
    assert IMAGE_DATASETS["inat2018"].build(tmp_path).class_names == [f"Genus species{c}" for c in range(6)]
    (root / "categories.json").write_text(json.dumps({"no": "categories"}))
    with pytest.raises(UserError, match="categories.json is not a list of categories"):
        IMAGE_DATASETS["inat2018"].build(tmp_path)


def test_inaturalist_without_category_names_has_none(tmp_path):
    root = make_inat(tmp_path)
    document = json.loads((root / "train2018.json").read_text())
    document["categories"] = [{"id": c["id"]} for c in document["categories"]]
    (root / "train2018.json").write_text(json.dumps(document))
    assert IMAGE_DATASETS["inat2018"].build(tmp_path).class_names is None


def test_oltr_lists_name_classes_by_their_folders(tmp_path):
    root = make_oltr(tmp_path, "imagenet_lt")  # train/c00/0000.jpg ...
    assert IMAGE_DATASETS["imagenet_lt"].build(tmp_path).class_names == [f"c{c:02d}" for c in range(6)]
    # ImageNet's WordNet ids become words where a synset list lies beside the split files
    (root / "LOC_synset_mapping.txt").write_text("".join(f"c{c:02d} word {c}, other name\n" for c in range(5)))
    names = IMAGE_DATASETS["imagenet_lt"].build(tmp_path).class_names
    assert names[:2] == ["word 0", "word 1"] and names[5] == "c05"  # a wnid the list lacks stays


@pytest.mark.parametrize("lines, names", [
    # Places-LT: below the shared data_256/, less the one-letter index; categories may be nested
    (["data_256/a/abbey/1.jpg 0", "data_256/a/apartment_building/outdoor/2.jpg 1", "data_256/b/bakery/shop/3.jpg 2"],
     {0: "abbey", 1: "apartment_building/outdoor", 2: "bakery/shop"}),
    (["train/n01/1.jpg 0", "train/n01/2.jpg 0", "train/n02/3.jpg 1"], {0: "n01", 1: "n02"}),
    (["train/n01/1.jpg 0", "val/n01/2.jpg 0", "train/n02/3.jpg 1"], None),  # a class in two folders
    (["train/n01/1.jpg 0", "train/n01/2.jpg 1"], None),  # two classes in one folder
    (["1.jpg 0", "2.jpg 1"], None),
])
def test_folder_names_only_where_folders_and_classes_match_one_to_one(tmp_path, lines, names):
    from ltbench.data.split_files import folder_class_names

    (tmp_path / "split.txt").write_text("\n".join(lines))
    assert folder_class_names(tmp_path / "split.txt") == names


@pytest.mark.slow
def test_per_class_csv_names_the_classes_and_the_report_reads_them(tmp_path, fashion_mnist):
    import csv

    from ltbench.cli import main
    from ltbench.report.load import load_results
    from ltbench.report.plots import _per_class_seeds

    results = tmp_path / "results"
    assert main(["run", "--methods", "ce", "--dataset", "fashion_mnist_lt", "--if", "10", "--preset", "smoke",
                 "--n-max", "40", "--epochs", "1", "--results-dir", str(results)]) == 0
    (folder,) = [p for p in results.iterdir() if (p / "per_class.csv").exists()]
    rows = list(csv.DictReader(open(folder / "per_class.csv")))
    assert list(rows[0]) == ["class", "name", "n_train", "correct", "total"]
    assert [r["name"] for r in rows] == list(FASHION_CLASSES)
    loaded = load_results(results)
    classes = _per_class_seeds(list(loaded.per_class.values()))
    # head to tail, as the per-class figure's axis names them
    assert list(classes["name"]) == list(FASHION_CLASSES)
    assert np.all(np.diff(classes["n_train"].to_numpy()) <= 0)
