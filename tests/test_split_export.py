"""`ltbench split`: the exported indices pick, from the source dataset, exactly the images a
run trains on (same images, same order, same fingerprint)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from cifar_files import CIFAR10_NAMES, write_tiny_cifar
from image_data import make_oltr
from ltbench.cli import main
from ltbench.data import sources
from ltbench.data.datasets import DATASETS, split_fingerprint
from ltbench.data.image_datasets import IMAGE_DATASETS
from ltbench.store import RunStore


def export(tmp_path, *argv) -> dict:
    out = tmp_path / "split.json"
    assert main(["split", *argv, "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_cifar_indices_reproduce_the_training_set_and_its_fingerprint(tmp_path):
    write_tiny_cifar(tmp_path, per_class=30)
    doc = export(tmp_path, "cifar10_lt", "--if", "10", "--n-max", "25", "--data-root", str(tmp_path))
    # what another codebase does with the file: index the source's training split, in order
    train_x, train_y, test_x, test_y = sources.read_cifar("cifar10", tmp_path, download=False)
    picked = np.array(doc["train_indices"])
    assert train_y[picked].tolist() == doc["train_labels"]
    assert np.bincount(doc["train_labels"]).tolist() == doc["class_counts"]
    assert doc["class_counts"][0] == 25 and doc["class_counts"][-1] == 2
    val = np.array(doc["val_indices"])
    assert train_y[val].tolist() == doc["val_labels"]
    rebuilt = SimpleNamespace(train_x=train_x[picked], train_y=train_y[picked], test_x=test_x, test_y=test_y,
                              val_x=train_x[val], val_y=train_y[val])
    assert split_fingerprint(rebuilt) == doc["split_fingerprint"]
    data = DATASETS["cifar10_lt"].build(tmp_path, 10, n_max=25)
    assert doc["split_fingerprint"] == data.split_fingerprint and np.array_equal(train_x[picked], data.train_x)
    assert np.array_equal(train_x[val], data.val_x) and not set(doc["val_indices"]) & set(doc["train_indices"])
    # 30 images a class, 25 to 2 kept: 5 to 28 left out, of which up to 50 a class validate
    assert doc["val_class_counts"] == [30 - n for n in doc["class_counts"]] and doc["val_per_class"] == 50
    assert doc["class_names"] == CIFAR10_NAMES and "data_batch_1" in doc["train_indices_into"]
    assert (doc["dataset"], doc["imbalance_factor"], doc["profile"], doc["n_max"]) == ("cifar10_lt", 10.0, "exp", 25)


def test_the_header_comes_first_one_key_a_line(tmp_path, capsys):
    write_tiny_cifar(tmp_path)
    assert main(["split", "cifar10_lt", "--if", "5", "--profile", "step", "--n-max", "20",
                 "--data-root", str(tmp_path), "--out", "-"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0] == "{" and lines[-1] == "}"
    assert lines[1].startswith('  "format": ') and lines[-2].startswith('  "val_labels": [')
    doc = json.loads(text)
    assert doc["profile"] == "step" and doc["class_counts"] == [20] * 5 + [4] * 5


@pytest.mark.slow
def test_a_run_trains_on_the_exported_images(tmp_path, fashion_mnist):
    results = tmp_path / "results"
    assert main(["run", "--methods", "ce", "--dataset", "fashion_mnist_lt", "--if", "10", "--preset", "smoke",
                 "--n-max", "40", "--epochs", "1", "--results-dir", str(results)]) == 0
    store = RunStore(results)
    (run_id,) = store.run_ids()
    doc = export(tmp_path, "--run", run_id[:6], "--results-dir", str(results))
    assert doc["split_fingerprint"] == store.read_result(run_id)["split_fingerprint"]
    assert doc["n_max"] == 40 and doc["class_names"][0] == "T-shirt/top"
    # Fashion-MNIST's images are padded from 28 to 32 pixels, as the run pads them
    train_x, train_y, test_x, test_y = sources.read_fashion_mnist(fashion_mnist)
    pad = ((0, 0), (0, 0), (2, 2), (2, 2))
    picked = np.array(doc["train_indices"])
    val = np.array(doc["val_indices"])
    rebuilt = SimpleNamespace(train_x=np.pad(train_x[picked], pad), train_y=train_y[picked],
                              test_x=np.pad(test_x, pad), test_y=test_y, val_x=np.pad(train_x[val], pad),
                              val_y=train_y[val])
    assert split_fingerprint(rebuilt) == doc["split_fingerprint"]
    # the same split by its construction, named in full
    assert export(tmp_path, "fashion_mnist_lt", "--if", "10", "--n-max", "40")["train_indices"] == doc["train_indices"]


def test_a_changed_dataset_since_the_run_is_said(tmp_path, capsys):
    write_tiny_cifar(tmp_path / "data")
    results = tmp_path / "results"
    store = RunStore(results)
    from ltbench.sweep import resolve

    spec = resolve("ce", "cifar10_lt", 10, 0, "smoke", {"n_max": "20"})
    store.write_spec(spec)
    store.write_result({"run_id": spec.run_id, "status": "done", "top1": 50.0, "split_fingerprint": "0123456789abcdef",
                        **{k: getattr(spec, k) for k in ("method", "dataset", "imbalance_factor", "profile",
                                                          "backbone", "seed", "epochs", "batch_size", "preset")}})
    out = tmp_path / "split.json"
    code = main(["split", "--run", spec.run_id, "--results-dir", str(results), "--data-root", str(tmp_path / "data"),
                 "--out", str(out)])
    assert code == 1 and out.exists()
    assert "recorded split fingerprint 0123456789abcdef" in capsys.readouterr().err


def test_image_file_datasets_export_their_file_list(tmp_path):
    root = make_oltr(tmp_path, "imagenet_lt")
    doc = export(tmp_path, "imagenet_lt", "--n-max", "10", "--data-root", str(tmp_path))
    lines = [line.split() for line in (root / "ImageNet_LT_train.txt").read_text().splitlines()]
    assert [lines[i][0] for i in doc["train_indices"]] == doc["train_paths"]
    assert [int(lines[i][1]) for i in doc["train_indices"]] == doc["train_labels"]
    assert doc["class_counts"] == [10, 10, 10, 10, 8, 5] and doc["imbalance_factor"] == 256.0
    assert doc["split_fingerprint"] == IMAGE_DATASETS["imagenet_lt"].build(tmp_path, n_max=10).split_fingerprint
    assert doc["profile"] is None
    # the official validation list, by its lines
    val_lines = [line.split() for line in (root / "ImageNet_LT_val.txt").read_text().splitlines()]
    assert [val_lines[i][0] for i in doc["val_indices"]] == doc["val_paths"] and doc["val_per_class"] == 20
    assert [int(val_lines[i][1]) for i in doc["val_indices"]] == doc["val_labels"]
    assert "ImageNet_LT_val.txt" in doc["val_indices_into"] and not set(doc["val_paths"]) & set(doc["train_paths"])
    whole = export(tmp_path, "imagenet_lt", "--data-root", str(tmp_path))
    assert whole["train_indices"] == list(range(len(lines))) and whole["n_max"] is None


@pytest.mark.parametrize("argv, message", [
    (["cifar10_lt"], "--if not given for cifar10_lt"),
    (["cifar10_lt", "--if", "ten"], "imbalance factor 'ten' is not a number"),
    (["cifar10_lt", "--if", "10", "--profile", "zigzag"], "--profile=zigzag is not allowed"),
    (["cifar10_lt", "--if", "10", "--n-max", "0"], "--n-max"),
    (["imagenet_lt", "--if", "10"], "imagenet_lt comes with its long-tailed split"),
    (["cifar10_ltt", "--if", "10"], "unknown dataset 'cifar10_ltt'"),
    ([], "no dataset given"),
    (["cifar10_lt", "--run", "abc"], "--run takes the dataset"),
])
def test_bad_split_arguments_are_explained(tmp_path, capsys, argv, message):
    assert main(["split", *argv, "--data-root", str(tmp_path), "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert message in err and "hint:" in err
    assert not (tmp_path / "x.json").exists()
