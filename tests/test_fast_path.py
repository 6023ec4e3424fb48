"""The fast path changes nothing: the device-resident, batched loader gives the same batches,
and so the same loss curve, as a plain per-image path written independently here and fed to
the model in the plain NCHW layout. And the slow path (`loader=dataloader`, the original
codebases' DataLoader + PIL) draws the same images, augments repeatably, and runs end to end."""

import json

import numpy as np
import pytest
import torch

from ltbench.bench.throughput import reference_params
from ltbench.data.datasets import DATASETS
from ltbench.runner import make_trainer
from ltbench.method import Batch, Progress
from ltbench.sweep import resolve


def plain_batches(data, batch_size, seed, steps):
    """One image at a time with numpy, drawing the same random numbers in the same order."""
    sample_gen = torch.Generator().manual_seed(seed)
    augment_gen = torch.Generator().manual_seed(seed + 1)
    order = torch.randperm(len(data.train_y), generator=sample_gen).tolist()
    mean = np.array(data.mean, dtype=np.float32)[:, None, None]
    std = np.array(data.std, dtype=np.float32)[:, None, None]
    for step in range(steps):
        ids = order[step * batch_size : (step + 1) * batch_size]
        offsets = torch.randint(0, 9, (2, len(ids)), generator=augment_gen)
        flips = torch.rand(len(ids), generator=augment_gen) < 0.5
        images = []
        for i, j in enumerate(ids):
            padded = np.pad(data.train_x[j], ((0, 0), (4, 4), (4, 4)))
            oy, ox = int(offsets[0, i]), int(offsets[1, i])
            crop = padded[:, oy : oy + 32, ox : ox + 32]
            if flips[i]:
                crop = crop[:, :, ::-1]
            images.append((crop.astype(np.float32) / 255 - mean) / std)
        yield {"main": Batch([torch.from_numpy(np.stack(images))], torch.from_numpy(data.train_y[ids]))}


@pytest.fixture(scope="module")
def setup(fashion_mnist):
    # nn.Linear's own classifier init: LDAM-DRW's kaiming_normal_ starts with logits ~2.5x as
    # large, which magnifies the channels-last summation order past the tolerances below
    spec = resolve("ce", "fashion_mnist_lt", 100, 0, "smoke", {"batch_size": "32", "classifier_init": "default"})
    data = DATASETS["fashion_mnist_lt"].build(None, 100, "exp", spec.n_max)
    return spec, data


def test_fast_batches_equal_plain_batches(setup):
    spec, data = setup
    trainer = make_trainer(spec, data, torch.device("cpu"))
    fast = trainer.loader.epoch()
    for plain in plain_batches(data, spec.batch_size, spec.seed, steps=4):
        batch = next(fast)["main"]
        assert torch.equal(batch.labels, plain["main"].labels)
        assert torch.allclose(batch.views[0], plain["main"].views[0], atol=1e-6)


def test_same_loss_curve_for_the_first_steps(setup):
    spec, data = setup
    torch.use_deterministic_algorithms(True)
    try:
        # the plain side also runs the model the plain way (NCHW), so the check covers the
        # channels-last default too
        fast = make_trainer(spec, data, torch.device("cpu"))
        plain = make_trainer(spec, data, torch.device("cpu"), reference_params(spec.trainer_params))
        assert fast.params["channels_last"] and not plain.params["channels_last"]
        for g in fast.optimizer.param_groups + plain.optimizer.param_groups:
            g["lr"] = spec.params["lr"]
        fast_losses = [fast.train_step(b, Progress(0, 1, s, 6)).item() for s, b in zip(range(6), fast.loader.epoch())]
        plain_losses = [plain.train_step(b, Progress(0, 1, s, 6)).item()
                        for s, b in enumerate(plain_batches(data, spec.batch_size, spec.seed, 6))]
    finally:
        torch.use_deterministic_algorithms(False)
    # channels-last convolutions sum in another order: ~1e-5 relative drift after a few SGD
    # steps; a wrong batch or augmentation moves the loss by far more than this
    assert fast_losses[0] == pytest.approx(plain_losses[0], rel=1e-6)
    assert np.allclose(fast_losses, plain_losses, rtol=5e-4, atol=1e-6)
    assert len(set(np.round(fast_losses, 4))) > 1  # the model really trained


def test_class_counts_and_balanced_sampling_match_a_plain_count(setup):
    spec, data = setup
    assert np.bincount(data.train_y).tolist() == data.class_counts
    trainer = make_trainer(spec, data, torch.device("cpu"))
    sampler = trainer.loader.samplers["main"]
    seen = np.bincount(data.train_y[sampler.epoch(torch.Generator().manual_seed(5)).numpy()], minlength=10)
    assert seen.tolist() == data.class_counts  # an instance-sampled epoch sees every image once


# ----------------------------------------------------------------------------- the slow path


def _loaders(data, draws, padding, flip, workers=0, seed=0):
    from ltbench.data.loader import DeviceLoader
    from ltbench.data.reference_loader import ReferenceLoader

    return (DeviceLoader(data, draws, 32, "cpu", seed, padding=padding, flip=flip),
            ReferenceLoader(data, draws, 32, "cpu", seed, padding=padding, flip=flip, workers=workers))


def test_reference_loader_draws_the_same_images_as_the_device_loader(setup):
    from ltbench.method import Draw

    _, data = setup
    draws = {"feature": Draw("instance", views=2, augment="contrastive", augment_options={"grayscale_p": 0.0}),
             "classifier": Draw("class_balanced")}
    device, reference = _loaders(data, draws, padding=0, flip=False)
    assert reference.steps_per_epoch == device.steps_per_epoch
    steps = 0
    for fast, slow in zip(device.epoch(), reference.epoch()):
        for name in draws:
            assert torch.equal(fast[name].labels, slow[name].labels)
            assert len(slow[name].views) == draws[name].views
            for a, b in zip(fast[name].views, slow[name].views):  # no augmentation: the same pixels
                assert torch.allclose(a, b, atol=1e-5)
        steps += 1
    assert steps == device.steps_per_epoch


def test_reference_loader_augments_repeatably_whatever_the_workers(setup):
    from ltbench.method import Draw

    _, data = setup
    draws = {"main": Draw("instance")}
    _, one = _loaders(data, draws, padding=4, flip=True, workers=0)
    _, two = _loaders(data, draws, padding=4, flip=True, workers=2)
    first = [b["main"] for _, b in zip(range(3), one.epoch())]
    for a, b in zip(first, (b["main"] for _, b in zip(range(3), two.epoch()))):
        assert torch.equal(a.views[0], b.views[0]) and torch.equal(a.labels, b.labels)
    # really augmented: crops and flips move pixels away from the un-augmented images
    plain, _ = _loaders(data, draws, padding=0, flip=False)
    assert not torch.allclose(first[0].views[0], next(plain.epoch())["main"].views[0])
    # a loader restored from an epoch-boundary state gives the next epoch of an uninterrupted one
    _, resumed = _loaders(data, draws, padding=4, flip=True)
    resumed.load_state_dict(one.state_dict())
    assert torch.equal(next(one.epoch())["main"].views[0], next(resumed.epoch())["main"].views[0])


@pytest.mark.slow
def test_a_run_on_the_slow_path_is_the_same_experiment(tmp_path, fashion_mnist):
    from ltbench.cli import main
    from ltbench.store import RunStore

    argv = ["run", "--methods", "psc_hybrid", "--dataset", "fashion_mnist_lt", "--if", "100", "--preset", "smoke",
            "--set", "loader=dataloader", "--results-dir", str(tmp_path)]
    assert main(argv) == 0
    store = RunStore(tmp_path)
    (row,) = [store.read_result(i) for i in store.run_ids()]
    # the loader is an execution setting: recorded, but the same run id and preset as the fast path
    assert row["status"] == "done" and row["preset"] == "smoke"
    assert json.loads(row["execution"])["loader"] == "dataloader" and "loader" not in json.loads(row["params"])
    assert row["run_id"] == resolve("psc_hybrid", "fashion_mnist_lt", 100, 0, "smoke").run_id


def test_bf16_autocast_on_cpu_only_when_asked(setup):
    spec, data = setup
    for cpu_amp in (False, True):
        trainer = make_trainer(spec, data, torch.device("cpu"), {**spec.trainer_params, "cpu_amp": cpu_amp})
        with trainer.autocast():
            features = trainer.backbone(torch.randn(2, 1, 32, 32).contiguous(memory_format=torch.channels_last))
        assert features.dtype == (torch.bfloat16 if cpu_amp else torch.float32)
