"""ImageNet-LT, Places-LT and iNaturalist 2018 on tiny stand-ins in their published formats:
reading and checking the split files, the DataLoader pipeline, and whole runs on CPU."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import image_data
from image_data import data_root, one_thread  # noqa: F401  (module fixtures)
from ltbench import distributed, registry
from ltbench.cli import main
from ltbench.data.image_datasets import ImageFileData
from ltbench.data.image_loader import ImageLoader, eval_batches
from ltbench.data.image_transforms import eval_view, resized_crop_box, train_view
from ltbench.errors import UserError
from ltbench.method import Draw
from ltbench.store import RunStore
from ltbench.sweep import Sweep, expand, read_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RUN = ["run", "--preset", "smoke", "--device", "cpu", "--set", "image_size=16", "--batch-size", "32"]
N_EVAL = len(image_data.TRAIN_COUNTS) * image_data.EVAL_PER_CLASS


@pytest.fixture
def copy_of(data_root, tmp_path):
    """A fresh copy of one tiny dataset to break."""
    def copy(name):
        shutil.copytree(data_root / name, tmp_path / name)
        return tmp_path, tmp_path / name
    return copy


@pytest.fixture(autouse=True)
def one_worker(monkeypatch):
    monkeypatch.setenv("LTBENCH_WORKERS", "1")


# ----------------------------------------------------------------------------- whole runs


# tau-norm's stage 1 is CE, and it picks tau on validation-image features: every loader path
@pytest.mark.parametrize("dataset, method", [("imagenet_lt", "tau_norm"), ("places_lt", "crt"), ("inat2018", "sc_hybrid")])
def test_each_dataset_trains_end_to_end(data_root, tmp_path, dataset, method):
    results = tmp_path / "results"
    # one epoch of cRT's classifier stage is enough to see it run
    assert main([*RUN, "--methods", method, "--dataset", dataset, "--data-root", str(data_root),
                 "--results-dir", str(results), "--set", "crt.crt_epochs=1"] if method == "crt" else
                [*RUN, "--methods", method, "--dataset", dataset, "--data-root", str(data_root),
                 "--results-dir", str(results)]) == 0
    store = RunStore(results)
    (row,) = [store.read_result(r) for r in store.run_ids() if store.read_spec(r).method == method]
    assert row["status"] == "done", row["error"]
    info = registry.dataset(dataset)
    assert float(row["imbalance_factor"]) == info.fixed_imbalance_factor
    # the smoke preset caps every class at 20 training images
    assert int(row["n_train"]) == sum(min(n, 20) for n in image_data.TRAIN_COUNTS)
    assert int(row["n_classes"]) == len(image_data.TRAIN_COUNTS) and row["many"] == ""
    per_class = store.read_per_class(row["run_id"])
    assert [int(r["total"]) for r in per_class] == [image_data.EVAL_PER_CLASS] * len(image_data.TRAIN_COUNTS)
    assert 0 <= float(row["top1"]) <= 100
    # validated on the official list (4 a class here), or on 3 a class carved from iNaturalist's
    # classes of 23 or more training images (60 and 36 here)
    assert int(row["n_val"]) == (6 if dataset == "inat2018" else image_data.VAL_PER_CLASS * 6)
    assert 0 <= float(row["val_top1"]) <= 100 and row["top1_bestval"] != ""


def test_paper_configs_resolve_to_the_published_protocols():
    imagenet = read_config(CONFIGS / "imagenet_lt_paper.toml")
    inat = read_config(CONFIGS / "inat2018_paper.toml")
    specs = {(s.method, s.dataset): s for config in (imagenet, inat) for s in expand(
        Sweep(config["methods"], config["datasets"], config.get("if", []), preset=config["preset"],
              overrides=config["set"]))}
    ce = specs["ce", "imagenet_lt"]
    assert (ce.backbone, ce.epochs, ce.batch_size, ce.preset) == ("resnext50_32x4d", 90, 512, "paper")
    assert ce.params["lr"] == 0.2 and ce.params["schedule"] == "cosine" and ce.params["weight_decay"] == 5e-4
    assert ce.params["image_size"] == 224 and ce.imbalance_factor == 256
    assert specs["crt", "imagenet_lt"].own_hyperparameters["crt_epochs"] == 10
    inat_ce = specs["ce", "inat2018"]
    assert (inat_ce.backbone, inat_ce.epochs, inat_ce.batch_size) == ("resnet50", 90, 512)
    assert inat_ce.params["weight_decay"] == 1e-4 and inat_ce.params["train_color_jitter"] == 0.0
    assert specs["crt", "inat2018"].own_hyperparameters["crt_epochs"] == 30
    assert {m for m, d in specs if d == "inat2018"} >= {"sc_hybrid", "psc_hybrid"}


def test_imbalance_factor_of_a_published_split_is_fixed(data_root, capsys):
    assert main([*RUN, "--methods", "ce", "--dataset", "imagenet_lt", "--if", "10", "--dry-run"]) == 2
    assert "imagenet_lt comes with its long-tailed split (IF 256)" in capsys.readouterr().err
    assert main([*RUN, "--methods", "ce", "--dataset", "cifar10_lt", "--dry-run"]) == 2
    assert "--if not given" in capsys.readouterr().err
    assert main([*RUN, "--methods", "ce", "--dataset", "imagenet_lt", "--if", "256", "--dry-run",
                 "--data-root", str(data_root)]) == 0
    # without its files, a dry run says so
    assert main([*RUN, "--methods", "ce", "--dataset", "imagenet_lt", "--dry-run",
                 "--data-root", str(data_root / "elsewhere")]) == 2
    assert "dataset missing" in capsys.readouterr().out


def test_unreadable_image_fails_the_run_with_its_name(copy_of, tmp_path):
    root, folder = copy_of("imagenet_lt")
    (folder / "train/c01/0002.jpg").write_bytes(b"not a jpeg")
    results = tmp_path / "results"
    assert main([*RUN, "--methods", "ce", "--dataset", "imagenet_lt", "--data-root", str(root),
                 "--results-dir", str(results)]) == 1
    (run_id,) = RunStore(results).run_ids()
    error = RunStore(results).read_result(run_id)["error"]
    assert "unreadable image(s) in a batch of the training split: train/c01/0002.jpg" in error
    assert "UnidentifiedImageError" in error and "Traceback" not in error


# ----------------------------------------------------------------------------- checks on the files


def read(name, root):
    return registry.dataset(name).read(root)


def test_missing_split_file_says_where_it_looked(copy_of):
    root, folder = copy_of("places_lt")
    (folder / "Places_LT_test.txt").unlink()
    with pytest.raises(UserError, match=r"places_lt: split file .*Places_LT_test.txt not found") as err:
        read("places_lt", root)
    assert "--data-option places_lt.image_root" in str(err.value)


def test_missing_images_are_listed(copy_of):
    root, folder = copy_of("imagenet_lt")
    (folder / "train/c02/0003.jpg").unlink()
    shutil.rmtree(folder / "test/c05")
    with pytest.raises(UserError, match=r"1 of 144 image\(s\) listed in .*ImageNet_LT_train.txt are missing under "
                                        r".*: train/c02/0003.jpg"):
        read("imagenet_lt", root)
    (folder / "ImageNet_LT_train.txt").write_text((folder / "ImageNet_LT_train.txt").read_text().replace(
        "train/c02/0003.jpg 2\n", ""))
    with pytest.raises(UserError, match=r"8 of 48 image\(s\) .* test/c05/0000.jpg, test/c05/0001.jpg, .* \.\.\."):
        read("imagenet_lt", root)


def test_labels_out_of_range_and_classes_without_images_are_named(copy_of):
    root, folder = copy_of("imagenet_lt")
    split = folder / "ImageNet_LT_train.txt"
    original = split.read_text()
    split.write_text(original.replace("train/c00/0000.jpg 0", "train/c00/0000.jpg 1000"))
    with pytest.raises(UserError, match=r"1 label\(s\) out of range 0..999 for imagenet_lt: train/c00/0000.jpg "
                                        r"\(label 1000\)"):
        read("imagenet_lt", root)
    split.write_text("".join(line + "\n" for line in original.splitlines() if not line.endswith(" 3")))
    with pytest.raises(UserError, match=r"class\(es\) 3 have no training image"):
        read("imagenet_lt", root)
    split.write_text(original + "train/c00/0001.jpg\n")
    with pytest.raises(UserError, match=r"1 line\(s\) are not `relative/path label`: line 145: 'train/c00/0001.jpg'"):
        read("imagenet_lt", root)


def test_inat_annotations_are_checked(copy_of):
    root, folder = copy_of("inat2018")
    path = folder / "val2018.json"
    document = json.loads(path.read_text())
    document["annotations"][0]["category_id"] = 9000
    path.write_text(json.dumps(document))
    with pytest.raises(UserError, match=r"val2018.json: 1 annotation\(s\) have a category id not in `categories`: "
                                        r"train_val2018/Plantae/val/c00/0000.jpg \(category 9000\)"):
        read("inat2018", root)
    path.write_text("{\"images\": []}")
    with pytest.raises(UserError, match="has no annotations, categories list"):
        read("inat2018", root)


def test_missing_dataset_stops_the_sweep_before_training(tmp_path, capsys):
    assert main([*RUN, "--methods", "ce", "--dataset", "inat2018", "--data-root", str(tmp_path),
                 "--results-dir", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert "inat2018: split file" in err and "train2018.json not found" in err and "Traceback" not in err


def test_data_options_point_at_files_elsewhere(data_root, tmp_path, capsys):
    splits = tmp_path / "splits"
    splits.mkdir()
    shutil.copy(data_root / "imagenet_lt/ImageNet_LT_train.txt", splits / "train.txt")
    shutil.copy(data_root / "imagenet_lt/ImageNet_LT_test.txt", splits / "test.txt")
    shutil.copy(data_root / "imagenet_lt/ImageNet_LT_val.txt", splits / "val.txt")
    options = {"image_root": str(data_root / "imagenet_lt"), "split_dir": "splits", "train_file": "train.txt",
               "eval_file": "test.txt", "val_file": "val.txt"}
    train_x, train_y, test_x, _ = registry.dataset("imagenet_lt").located(options).read(tmp_path)
    assert len(train_x) == sum(image_data.TRAIN_COUNTS) and len(test_x) == N_EVAL
    val_y = registry.dataset("imagenet_lt").located(options).build(tmp_path).val_y
    assert len(val_y) == image_data.VAL_PER_CLASS * len(image_data.TRAIN_COUNTS)
    assert main(["run", "--methods", "ce", "--dataset", "imagenet_lt", "--data-option", "imagenet_lt.image_rot=x"]) == 2
    assert "unknown data option imagenet_lt.image_rot; did you mean imagenet_lt.image_root?" in capsys.readouterr().err


def test_a_sweep_does_not_see_the_data_options_of_one_before_it(data_root, tmp_path, capsys):
    """Two sweeps in one process: the first one's --data-option stays with its runs."""
    sweep = [*RUN, "--methods", "ce", "--dataset", "imagenet_lt", "--data-root", str(tmp_path),
             "--results-dir", str(tmp_path / "results"), "--dry-run"]
    elsewhere = [f"--data-option=imagenet_lt.{key}={data_root / 'imagenet_lt'}" for key in ("image_root", "split_dir")]
    assert main(sweep + elsewhere) == 0
    assert "to run" in capsys.readouterr().out
    # the default layout under tmp_path holds no files: the second sweep must not find the first one's
    assert main(sweep) == 2
    assert f"split file {tmp_path / 'imagenet_lt'}" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the pipeline


@pytest.fixture
def tiny(data_root):
    return registry.dataset("inat2018").build(data_root, None, n_max=None)


def first_batches(data, draws, workers, steps=2):
    loader = ImageLoader(data, draws, 24, "cpu", seed=3, params={"image_size": 16, "flip": True}, workers=workers)
    stream = loader.epoch()
    return [next(stream) for _ in range(steps)]


def test_views_depend_on_the_seed_not_on_the_workers(tiny):
    draws = {"feature": Draw("instance", views=2, augment="contrastive", augment_options={"color_jitter": 0.4}),
             "classifier": Draw("class_balanced")}
    alone, with_workers = first_batches(tiny, draws, 0), first_batches(tiny, draws, 2)
    for a, b in zip(alone, with_workers):
        for name in draws:
            assert torch.equal(a[name].labels, b[name].labels)
            assert all(torch.equal(x, y) for x, y in zip(a[name].views, b[name].views))
    feature = alone[0]["feature"]
    assert feature.views[0].shape == (24, 3, 16, 16) and not torch.equal(feature.views[0], feature.views[1])


def test_ranks_load_their_shares_of_the_same_batches(tiny, monkeypatch):
    draws = {"main": Draw("class_balanced")}
    (whole,) = first_batches(tiny, draws, 0, steps=1)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    shares = []
    for r in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        (batch,) = first_batches(tiny, draws, 0, steps=1)
        shares.append(batch["main"])
    assert [len(s.labels) for s in shares] == [12, 12]
    assert torch.equal(torch.cat([s.labels for s in shares]), whole["main"].labels)
    assert torch.equal(torch.cat([s.views[0] for s in shares]), whole["main"].views[0])


def test_evaluation_views_are_resized_and_centre_cropped(tiny):
    (images, labels), *_ = list(eval_batches(tiny, tiny.test_x, tiny.test_y, "cpu", 64, 16, workers=0))
    assert images.shape == (N_EVAL, 3, 16, 16) and torch.equal(labels, torch.from_numpy(tiny.test_y))
    from PIL import Image
    picture = Image.new("RGB", (300, 200))
    assert eval_view(picture, 224).shape == (3, 224, 224)


def test_resized_crop_boxes_stay_inside_the_image_and_follow_the_generator():
    rng = np.random.default_rng(0)
    boxes = [resized_crop_box(500, 375, rng) for _ in range(200)]
    assert all(0 <= left and 0 <= top and left + w <= 500 and top + h <= 375 for left, top, w, h in boxes)
    areas = [w * h / (500 * 375) for _, _, w, h in boxes]
    assert min(areas) < 0.2 and max(areas) > 0.8
    from PIL import Image
    picture = Image.fromarray(np.random.default_rng(1).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    a = train_view(picture, 32, np.random.default_rng(7), jitter=0.4)
    b = train_view(picture, 32, np.random.default_rng(7), jitter=0.4)
    assert a.shape == (3, 32, 32) and a.dtype == torch.uint8 and torch.equal(a, b)


def test_n_max_caps_every_class(data_root):
    data = registry.dataset("imagenet_lt").build(data_root, 256, n_max=10)
    assert isinstance(data, ImageFileData) and data.class_counts == [min(n, 10) for n in image_data.TRAIN_COUNTS]
    assert np.bincount(data.train_y).tolist() == data.class_counts and len(data.test_y) == N_EVAL
    assert all(os.fsdecode(p).startswith("train/") for p in data.train_x)
