"""The slow path: a CIFAR-sized dataset fed the way the original long-tailed codebases feed it
(torchvision DataLoader, one PIL image per item, PIL transforms, worker processes).

It draws the same indices as DeviceLoader (the same samplers on the same checkpointed
generator), so the two paths differ only in how the images are augmented and moved. It
exists to check that the fast path changes no result (`--set loader=dataloader`, compared
over seeds) and to time the reference loop in `ltbench bench`.

Augmentation randomness: every item of an epoch carries its own seed, drawn from the run
seed, the epoch and the draw, and its transforms run under that seed. So results do not
depend on the number of workers, a run is repeatable, and a resumed run augments as an
uninterrupted one would.
"""

import math
import os

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from ltbench.data import augment, paired_augment
from ltbench.data.datasets import LongTailData
from ltbench.data.samplers import samplers_for
from ltbench.method import Batch, Draw


class PilDataset(Dataset):
    """One PIL image per item, `views` independently transformed copies of it. An item is
    (image index, seed): torchvision's transforms draw from torch's global generator, so it is
    seeded per item, inside a fork that leaves the caller's generator as it was."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform, views: int):
        self.images, self.labels, self.transform, self.views = images, labels, transform, views
        # a list: one transform per view, each view once (a query and a key)
        self.per_view = transform if isinstance(transform, list) else [transform] * views

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, item):
        i, seed = item
        image = self.images[i]
        pil = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            views = [transform(pil) for transform in self.per_view]
        return views, int(self.labels[i])


def pil_transform(data: LongTailData, draw: Draw, padding: int, flip: bool):
    """torchvision's versions of ltbench.data.augment's recipes (a list of two for query_key)."""
    size = data.train_x.shape[-1]
    options = draw.augment_options
    if draw.augment == "query_key":
        return query_key_transforms(data, options, padding, flip)
    steps = []
    if draw.augment != "none":
        if draw.augment == "contrastive" and options.get("crop", "pad") == "resized":
            steps.append(transforms.RandomResizedCrop(size, scale=(0.2, 1.0)))
        elif draw.augment == "sim":
            steps.append(transforms.RandomResizedCrop(size, scale=augment.SIM_SCALE))
        elif padding:
            steps.append(transforms.RandomCrop(size, padding=padding))
        if flip:
            steps.append(transforms.RandomHorizontalFlip())
    if draw.augment == "contrastive":
        strength = options.get("color_jitter", 0.0)
        if strength > 0:
            jitter = transforms.ColorJitter(strength, strength, strength, strength / 4)
            steps.append(transforms.RandomApply([jitter], p=0.8))
        if options.get("grayscale_p", 0.2) > 0:
            steps.append(transforms.RandomGrayscale(p=options.get("grayscale_p", 0.2)))
    if draw.augment == "sim":
        jitter = transforms.ColorJitter(*(augment.SIM_COLOR_JITTER,) * 3, augment.SIM_COLOR_JITTER / 4)
        steps += [transforms.RandomApply([jitter], p=0.8), transforms.RandomGrayscale(p=0.2)]
    return transforms.Compose(steps + [transforms.ToTensor(), transforms.Normalize(data.mean, data.std)])


def query_key_transforms(data: LongTailData, options: dict, padding: int, flip: bool) -> list:
    """PaCo's CIFAR query and key recipes (ltbench.data.paired_augment) as the original's PIL
    pipelines: torchvision's AutoAugment and GaussianBlur where paco_cifar.py has autoaug.py's
    CIFAR10Policy and MoCo's PIL blur, and paired_augment's Cutout on the tensor."""
    size, grey = data.train_x.shape[-1], [paired_augment.GREY] * data.train_x.shape[1]
    flips = [transforms.RandomHorizontalFlip()] if flip else []
    finish = [transforms.ToTensor(), transforms.Normalize(data.mean, data.std)]

    def cutout(image: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
        return paired_augment.cutout(image[None], gen)[0]

    crops = [transforms.RandomCrop(size, padding=padding)] if padding else []
    views = {
        "autoaugment_cutout": [*crops, *flips, transforms.AutoAugment(transforms.AutoAugmentPolicy.CIFAR10, fill=grey), transforms.ToTensor(),
                               transforms.Lambda(cutout), transforms.Normalize(data.mean, data.std)],
        "standard": [*crops, *flips, *finish],
        "simclr_blur": [transforms.RandomResizedCrop(size, scale=(0.2, 1.0)), *flips,
                        transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                        transforms.RandomGrayscale(p=0.2),
                        transforms.RandomApply([transforms.GaussianBlur(13, sigma=(0.1, 2.0))],
                                               p=options.get("key_options", {}).get("blur_p", 0.5)), *finish],
    }
    query, key = options.get("query", "autoaugment_cutout"), options.get("key", "simclr_blur")
    if query not in views or key not in views:
        raise ValueError(f"the reference loader has query_key views {tuple(views)}, not {query!r} or {key!r}")
    return [transforms.Compose(views[query]), transforms.Compose(views[key])]


class ReferenceLoader:
    """DeviceLoader's interface (epoch, steps_per_epoch, samplers, state) over DataLoaders."""

    def __init__(self, data: LongTailData, draws: dict[str, Draw], batch_size: int, device, seed: int,
                 padding: int = 4, flip: bool = True, workers: int | None = None):
        self.device = torch.device(device)
        self.batch_size, self.seed = batch_size, seed
        self.n_images = len(data.train_y)
        self.workers = os.cpu_count() if workers is None else workers
        self.samplers = samplers_for(draws, torch.from_numpy(data.train_y), data.num_classes)
        self.datasets = {name: PilDataset(data.train_x, data.train_y, pil_transform(data, d, padding, flip), d.views)
                         for name, d in draws.items()}
        # query_key's two views travel stacked, queries over keys, as DeviceLoader gives them
        self.stacked = {name for name, d in draws.items() if d.augment == "query_key"}
        self.sample_gen = torch.Generator().manual_seed(seed)
        self.epochs_drawn = 0

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.n_images / self.batch_size)

    def epoch(self):
        """Yields, per step, {draw name: Batch}, the batches on the device."""
        epoch = self.epochs_drawn
        self.epochs_drawn += 1
        iterators = {}
        for k, (name, sampler) in enumerate(self.samplers.items()):
            indices = sampler.epoch(self.sample_gen).tolist()
            seeds = np.random.SeedSequence([self.seed, epoch, k]).generate_state(len(indices), np.uint64) >> 1
            items = list(zip(indices, seeds.tolist()))
            iterators[name] = iter(DataLoader(self.datasets[name], batch_size=self.batch_size, sampler=items,
                                              num_workers=self.workers, pin_memory=self.device.type == "cuda"))
        for _ in range(self.steps_per_epoch):
            batches = {}
            for name, it in iterators.items():
                views, labels = next(it)
                views = [torch.cat(views)] if name in self.stacked else views
                batches[name] = Batch([v.to(self.device, non_blocking=True) for v in views],
                                      labels.to(self.device, non_blocking=True))
            yield batches

    def state_dict(self) -> dict:
        return {"sample_gen": self.sample_gen.get_state(), "epochs_drawn": self.epochs_drawn}

    def load_state_dict(self, state: dict) -> None:
        self.sample_gen.set_state(state["sample_gen"].cpu())
        self.epochs_drawn = state["epochs_drawn"]
