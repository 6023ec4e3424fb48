"""Batches of image files for the trainer: decoded and augmented in DataLoader workers, the
DeviceLoader's interface (`epoch()` yields {draw name: Batch}) for datasets that do not fit
in memory.

Every rank draws the same epoch's indices from the same generator and loads its share of
each global batch (ltbench.distributed.share), so instance, class-balanced and square-root
sampling mean across ranks what they mean in one process. A sample is loaded under the key
(index, (epoch seed, draw, position)), and its augmentation is seeded from the key: the
views depend on the run's seed and the sample's place in the epoch, not on worker, rank or
a resume, and a checkpoint needs only the index generator's state.
"""

import os
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ltbench import distributed
from ltbench.data import augment, paired_augment
from ltbench.data.image_transforms import CONTRASTIVE_SCALE, STANDARD_SCALE, eval_view, train_view
from ltbench.data.loader import check_augmentations
from ltbench.data.samplers import samplers_for
from ltbench.data.split_files import SHOWN
from ltbench.errors import UserError
from ltbench.method import Batch, Draw

WORKERS_ENV = "LTBENCH_WORKERS"
MOST_WORKERS = 12  # classifier-balancing's num_workers


def default_workers() -> int:
    """$LTBENCH_WORKERS, else this process's share of the CPUs, less one for the training loop.
    The results do not depend on it."""
    if os.environ.get(WORKERS_ENV):
        return int(os.environ[WORKERS_ENV])
    cpus = int(os.environ.get("SLURM_CPUS_PER_TASK", 0)) or len(os.sched_getaffinity(0)) // distributed.local_world_size()
    return max(0, min(MOST_WORKERS, cpus - 1))


class ImageFiles(Dataset):
    """An image file per item, one copy of it per view function (the views of a draw)."""

    def __init__(self, root: Path, paths: np.ndarray, labels: np.ndarray, per_view: list):
        self.root, self.paths, self.labels = Path(root), paths, labels
        self.per_view = per_view

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        relative, label = os.fsdecode(self.paths[index]), int(self.labels[index])
        try:
            with Image.open(self.root / relative) as image:
                image = image.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            # reported by the training process, which can stop the run with a plain message
            return None, label, f"{relative} ({type(exc).__name__}: {exc})"
        rng = np.random.default_rng(seed)
        return [view(image, rng=rng) for view in self.per_view], label, ""


def collate(samples):
    unreadable = [error for _, _, error in samples if error]
    if unreadable:
        return None, None, unreadable
    views = [torch.stack([sample[0][v] for sample in samples]) for v in range(len(samples[0][0]))]
    return views, torch.tensor([sample[1] for sample in samples]), []


def raise_unreadable(unreadable: list[str], split: str):
    raise UserError(f"{len(unreadable)} unreadable image(s) in a batch of the {split} split: "
                    + "; ".join(unreadable[:SHOWN]) + (" ..." if len(unreadable) > SHOWN else ""),
                    hint="re-download them, or take them out of the split file")


def _eval_view(image, rng, size):
    return eval_view(image, size)


def _standard(options, size, flip, params):
    return partial(train_view, size=size, flip=flip, jitter=params.get("train_color_jitter", 0.0))


def _contrastive(options, size, flip, params):
    # SupCon's views: colour jitter (s, s, s, s/4) with p 0.8, random grayscale. Images this
    # size have no CIFAR-style padded crop: "pad" takes the standard RandomResizedCrop,
    # "resized" SupCon's scale (0.2, 1).
    strength = options.get("color_jitter", 0.0)
    scale = CONTRASTIVE_SCALE if options.get("crop") == "resized" else STANDARD_SCALE
    return partial(train_view, size=size, scale=scale, flip=flip, jitter=strength, jitter_hue=strength / 4,
                   jitter_p=0.8, grayscale_p=options.get("grayscale_p", 0.2))


def _sim(options, size, flip, params, **extra):
    return partial(train_view, size=size, scale=augment.SIM_SCALE, flip=flip, jitter=augment.SIM_COLOR_JITTER,
                   jitter_hue=augment.SIM_COLOR_JITTER / 4, jitter_p=0.8, grayscale_p=0.2, **extra)


def _sim_blur(options, size, flip, **extra):
    return partial(train_view, size=size, scale=augment.SIM_SCALE, flip=flip, jitter=augment.SIM_COLOR_JITTER,
                   jitter_p=1.0, grayscale_p=0.2, blur_p=options.get("blur_p", 0.5), **extra)


def _rand(options) -> dict:
    return {"rand_ops": options.get("num_ops", paired_augment.RAND_OPS),
            "rand_magnitude": options.get("magnitude", paired_augment.RAND_MAGNITUDE)}


# the image-file versions of ltbench.data.loader.AUGMENTATIONS (the CIFAR-only autoaugment_cutout
# aside), each (view options, image size, flip, run params) -> view function
IMAGE_VIEWS = {
    "standard": _standard,
    "contrastive": _contrastive,
    "sim": _sim,
    "none": lambda options, size, flip, params: partial(_eval_view, size=size),
    "randaugment": lambda options, size, flip, params: partial(train_view, size=size, flip=flip, **_rand(options)),
    "rand_cls": lambda options, size, flip, params: partial(
        train_view, size=size, scale=paired_augment.RAND_SCALE, flip=flip, jitter=paired_augment.RAND_JITTER,
        jitter_p=1.0, **_rand(options)),
    "sim_rand": lambda options, size, flip, params: _sim(options, size, flip, params, **_rand(options)),
    "sim_blur": lambda options, size, flip, params: _sim_blur(options, size, flip),
    "sim_blur_rand": lambda options, size, flip, params: _sim_blur(options, size, flip, **_rand(options)),
    "simclr_blur": lambda options, size, flip, params: partial(
        train_view, size=size, scale=CONTRASTIVE_SCALE, flip=flip, jitter=0.4, jitter_hue=0.1, jitter_p=0.8,
        grayscale_p=0.2, blur_p=options.get("blur_p", 0.5)),
}


def view_functions(draw: Draw, params: dict) -> list:
    """One view function per view of the draw, at the run's image size."""
    return [IMAGE_VIEWS[view.augment](view.options, params["image_size"], params["flip"], params)
            for view in draw.view_list()]


class EpochPlan:
    """A draw's DataLoader batch sampler: this rank's keys for each step of the current epoch.
    Replaced every epoch under the same DataLoader, so its workers persist across epochs."""

    def __init__(self):
        self.batches: list[list] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class ImageLoader:
    def __init__(self, data, draws: dict[str, Draw], batch_size: int, device, seed: int, params: dict,
                 workers: int | None = None):
        self.device = torch.device(device)
        self.draws, self.batch_size = draws, batch_size
        self.steps_per_epoch = distributed.steps_per_epoch(len(data.train_y), batch_size)
        self.samplers = samplers_for(draws, torch.from_numpy(data.train_y), data.num_classes)
        self.sample_gen = torch.Generator().manual_seed(seed)
        self.mean = torch.tensor(data.mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(data.std, device=self.device).view(1, -1, 1, 1)
        check_augmentations(draws, IMAGE_VIEWS, "the image-file loader")
        workers = default_workers() if workers is None else workers
        per_draw = -(-workers // len(draws)) if workers else 0
        self.plans = {name: EpochPlan() for name in draws}
        self.loaders = {
            name: DataLoader(ImageFiles(data.root, data.train_x, data.train_y, view_functions(d, params)),
                             batch_sampler=self.plans[name], num_workers=per_draw, collate_fn=collate,
                             pin_memory=self.device.type == "cuda", persistent_workers=per_draw > 0)
            for name, d in draws.items()
        }

    def epoch(self):
        """Yields, per step, {draw name: Batch} for every draw of the method."""
        indices = {name: s.epoch(self.sample_gen).tolist() for name, s in self.samplers.items()}
        epoch_seed = int(torch.randint(2**62, (1,), generator=self.sample_gen))
        for d, (name, idx) in enumerate(indices.items()):
            self.plans[name].batches = [
                [(idx[p], (epoch_seed, d, p))
                 for p in distributed.share(step * self.batch_size, min((step + 1) * self.batch_size, len(idx)))]
                for step in range(self.steps_per_epoch)
            ]
        streams = {name: iter(loader) for name, loader in self.loaders.items()}
        for _ in range(self.steps_per_epoch):
            yield {name: self._batch(next(stream)) for name, stream in streams.items()}

    def _batch(self, loaded) -> Batch:
        views, labels, unreadable = loaded
        if unreadable:
            raise_unreadable(unreadable, "training")
        views = [augment.normalize(v.to(self.device, non_blocking=True), self.mean, self.std) for v in views]
        return Batch(views, labels.to(self.device, non_blocking=True))

    def state_dict(self) -> dict:
        return {"sample_gen": self.sample_gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.sample_gen.set_state(state["sample_gen"].cpu())


def eval_batches(data, x: np.ndarray, y: np.ndarray, device, batch_size: int, image_size: int,
                 workers: int | None = None):
    """(normalised images, labels) on the device for the given paths, un-augmented, in order."""
    device = torch.device(device)
    workers = default_workers() if workers is None else workers
    loader = DataLoader(ImageFiles(data.root, x, y, [partial(_eval_view, size=image_size)]), batch_size=batch_size,
                        num_workers=workers, collate_fn=collate, pin_memory=device.type == "cuda")
    mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, device=device).view(1, -1, 1, 1)
    for views, labels, unreadable in loader:
        if unreadable:
            raise_unreadable(unreadable, "evaluation")
        yield augment.normalize(views[0].to(device, non_blocking=True), mean, std), labels.to(device)
