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
from ltbench.data.loader import AUGMENTATIONS, check_augmentations
from ltbench.data.samplers import samplers_for
from ltbench.method import Batch, Draw, View


class PilDataset(Dataset):
    """One PIL image per item, one transformed copy of it per view transform. An item is
    (image index, seed): torchvision's transforms draw from torch's global generator, so it is
    seeded per item, inside a fork that leaves the caller's generator as it was."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, per_view: list):
        self.images, self.labels, self.per_view = images, labels, per_view

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


def _cutout(image: torch.Tensor) -> torch.Tensor:
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
    return paired_augment.cutout(image[None], gen)[0]


def _blur(p: float) -> list:
    # a 13-pixel kernel holds SimCLR's largest sigma, 2, to 3 sigma
    return [transforms.RandomApply([transforms.GaussianBlur(13, sigma=(0.1, 2.0))], p=p)]


class SeededRandAugment:
    """paired_augment's RandAugment (timm's) as a PIL transform, seeded from the item's seed."""

    def __init__(self, num_ops: int = paired_augment.RAND_OPS, magnitude: int = paired_augment.RAND_MAGNITUDE):
        self.num_ops, self.magnitude = num_ops, magnitude

    def __call__(self, image: Image.Image) -> Image.Image:
        seed = int(torch.randint(0, 2**62, (1,)))
        return paired_augment.randaugment_pil([image], seed, self.num_ops, self.magnitude)[0]


def pil_steps(view: View, size: int, channels: int, padding: int, flip: bool) -> list:
    """torchvision's versions of ltbench.data.augment's and paired_augment's recipes, on PIL images
    (to the tensor: Cutout, as autoaug.py cuts after ToTensor, is the only step after it)."""
    options, name = view.options, view.augment
    flips = [transforms.RandomHorizontalFlip()] if flip else []
    crops = [transforms.RandomCrop(size, padding=padding)] if padding else []
    sim_jitter = [transforms.RandomApply([transforms.ColorJitter(*(augment.SIM_COLOR_JITTER,) * 3,
                                                                 augment.SIM_COLOR_JITTER / 4)], p=0.8),
                  transforms.RandomGrayscale(p=0.2)]
    sim = [transforms.RandomResizedCrop(size, scale=augment.SIM_SCALE), *flips, *sim_jitter]
    rand = [SeededRandAugment(options.get("num_ops", paired_augment.RAND_OPS),
                              options.get("magnitude", paired_augment.RAND_MAGNITUDE))]
    if name == "none":
        return []
    if name == "standard":
        return [*crops, *flips]
    if name == "sim":
        return sim
    if name == "randaugment":
        return [*crops, *flips, *rand]
    if name == "sim_rand":
        return [*sim, *rand]
    if name == "rand_cls":
        return [transforms.RandomResizedCrop(size, scale=paired_augment.RAND_SCALE), *flips,
                transforms.ColorJitter(*(paired_augment.RAND_JITTER,) * 3, 0.0), *rand]
    if name in ("sim_blur", "sim_blur_rand"):
        return [transforms.RandomResizedCrop(size, scale=augment.SIM_SCALE), *flips,
                transforms.ColorJitter(*(augment.SIM_COLOR_JITTER,) * 3, 0.0), transforms.RandomGrayscale(p=0.2),
                *_blur(options.get("blur_p", 0.5)), *(rand if name == "sim_blur_rand" else [])]
    if name == "autoaugment_cutout":
        grey = [paired_augment.GREY] * channels
        return [*crops, *flips, transforms.AutoAugment(transforms.AutoAugmentPolicy.CIFAR10, fill=grey),
                transforms.ToTensor(), transforms.Lambda(_cutout)]
    if name == "simclr_blur":
        jitter = transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)
        return [transforms.RandomResizedCrop(size, scale=(0.2, 1.0)), *flips, transforms.RandomApply([jitter], p=0.8),
                transforms.RandomGrayscale(p=0.2), *_blur(options.get("blur_p", 0.5))]
    if name == "contrastive":
        steps = [transforms.RandomResizedCrop(size, scale=(0.2, 1.0))] if options.get("crop", "pad") == "resized" \
            else crops
        steps += flips
        strength = options.get("color_jitter", 0.0)
        if strength > 0:
            steps.append(transforms.RandomApply([transforms.ColorJitter(strength, strength, strength, strength / 4)],
                                                p=0.8))
        if options.get("grayscale_p", 0.2) > 0:
            steps.append(transforms.RandomGrayscale(p=options.get("grayscale_p", 0.2)))
        return steps
    raise KeyError(name)


def pil_transform(data: LongTailData, view: View, padding: int, flip: bool):
    size, channels = data.train_x.shape[-1], data.train_x.shape[1]
    steps = pil_steps(view, size, channels, padding, flip)
    to_tensor = [] if any(isinstance(step, transforms.ToTensor) for step in steps) else [transforms.ToTensor()]
    return transforms.Compose(steps + to_tensor + [transforms.Normalize(data.mean, data.std)])


class ReferenceLoader:
    """DeviceLoader's interface (epoch, steps_per_epoch, samplers, state) over DataLoaders."""

    def __init__(self, data: LongTailData, draws: dict[str, Draw], batch_size: int, device, seed: int,
                 padding: int = 4, flip: bool = True, workers: int | None = None):
        self.device = torch.device(device)
        self.batch_size, self.seed = batch_size, seed
        self.n_images = len(data.train_y)
        self.workers = os.cpu_count() if workers is None else workers
        self.samplers = samplers_for(draws, torch.from_numpy(data.train_y), data.num_classes)
        # pil_steps mirrors every augmentation of the CIFAR-sized loader (a test holds it to that)
        check_augmentations(draws, AUGMENTATIONS, "the reference (DataLoader) loader")
        self.datasets = {name: PilDataset(data.train_x, data.train_y,
                                          [pil_transform(data, view, padding, flip) for view in d.view_list()])
                         for name, d in draws.items()}
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
                batches[name] = Batch([v.to(self.device, non_blocking=True) for v in views],
                                      labels.to(self.device, non_blocking=True))
            yield batches

    def state_dict(self) -> dict:
        return {"sample_gen": self.sample_gen.get_state(), "epochs_drawn": self.epochs_drawn}

    def load_state_dict(self, state: dict) -> None:
        self.sample_gen.set_state(state["sample_gen"].cpu())
        self.epochs_drawn = state["epochs_drawn"]
