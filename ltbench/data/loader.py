"""The CIFAR-sized training set as one uint8 tensor on the device, batched per step.

An epoch asks every draw's sampler for its indices, then each step gathers the batch by
indexing and augments it in one go (ltbench.data.augment). Images stay uint8 until the last
moment, so even CIFAR-100 is about 30 MB of device memory.
"""

import math

import torch

from ltbench.data import augment, paired_augment
from ltbench.data.datasets import LongTailData
from ltbench.data.samplers import samplers_for
from ltbench.errors import UserError
from ltbench.method import Batch, Draw

# every augmentation takes (uint8 batch, generator, padding=, flip=, **its options), and a Draw
# names one for all its views (`augment`) or one per view (`per_view`)
AUGMENTATIONS = {"standard": augment.standard, "contrastive": augment.contrastive, "none": lambda x, gen, **_: x,
                 "sim": augment.sim, "autoaugment_cutout": paired_augment.autoaugment_cutout,
                 "simclr_blur": paired_augment.simclr_blur, "randaugment": paired_augment.crop_flip_randaugment,
                 "rand_cls": paired_augment.rand_cls, "sim_rand": paired_augment.sim_rand,
                 "sim_blur": paired_augment.sim_blur, "sim_blur_rand": paired_augment.sim_blur_rand}


def check_augmentations(draws: dict[str, Draw], known, where: str) -> None:
    """A clear error for a view whose augmentation `known` (a registry) lacks, before any epoch."""
    for name, draw in draws.items():
        for view in draw.view_list():
            if view.augment not in known:
                raise UserError(f"draw '{name}' asks for augmentation '{view.augment}', which {where} lacks",
                                hint=f"use one of {', '.join(known)}")


class DeviceLoader:
    def __init__(self, data: LongTailData, draws: dict[str, Draw], batch_size: int, device, seed: int,
                 padding: int = 4, flip: bool = True):
        self.device = torch.device(device)
        self.x = torch.from_numpy(data.train_x).to(self.device)
        self.y = torch.from_numpy(data.train_y).to(self.device)
        self.mean = torch.tensor(data.mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(data.std, device=self.device).view(1, -1, 1, 1)
        self.draws = draws
        self.batch_size = batch_size
        self.padding, self.flip = padding, flip
        check_augmentations(draws, AUGMENTATIONS, "the CIFAR-sized loader")
        self.samplers = samplers_for(draws, torch.from_numpy(data.train_y), data.num_classes)
        self.sample_gen = torch.Generator().manual_seed(seed)
        self.augment_gen = torch.Generator(device=self.device).manual_seed(seed + 1)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def epoch(self):
        """Yields, per step, {draw name: Batch} for every draw of the method."""
        indices = {name: s.epoch(self.sample_gen).to(self.device) for name, s in self.samplers.items()}
        for step in range(self.steps_per_epoch):
            window = slice(step * self.batch_size, (step + 1) * self.batch_size)
            yield {name: self._batch(idx[window], self.draws[name]) for name, idx in indices.items()}

    def _batch(self, idx: torch.Tensor, draw: Draw) -> Batch:
        images = self.x[idx]
        views = [
            augment.normalize(AUGMENTATIONS[view.augment](images, self.augment_gen, padding=self.padding,
                                                          flip=self.flip, **view.options), self.mean, self.std)
            for view in draw.view_list()
        ]
        return Batch(views, self.y[idx])

    def state_dict(self) -> dict:
        return {"sample_gen": self.sample_gen.get_state(), "augment_gen": self.augment_gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.sample_gen.set_state(state["sample_gen"].cpu())
        self.augment_gen.set_state(state["augment_gen"].cpu())


def eval_batches(x, y, mean, std, device, batch_size: int = 1000):
    """The balanced test set, un-augmented, in fixed order."""
    x_dev = torch.from_numpy(x).to(device)
    y_dev = torch.from_numpy(y).to(device)
    mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(std, device=device).view(1, -1, 1, 1)
    for start in range(0, len(y_dev), batch_size):
        yield augment.normalize(x_dev[start : start + batch_size], mean, std), y_dev[start : start + batch_size]
