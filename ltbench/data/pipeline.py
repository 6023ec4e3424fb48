"""Which loader feeds the trainer, by the kind of dataset: CIFAR-sized arrays live on the
device (DeviceLoader, or with `loader=dataloader` the original codebases' DataLoader + PIL
path, ReferenceLoader); image files go through DataLoader workers (ImageLoader). All yield
{draw name: Batch} per step, so a method never knows which one it is fed by."""

from ltbench import distributed
from ltbench.data import image_loader, loader, reference_loader
from ltbench.data.image_datasets import ImageFileData
from ltbench.errors import UserError


def make_loader(data, draws: dict, batch_size: int, device, seed: int, params: dict):
    if isinstance(data, ImageFileData):
        return image_loader.ImageLoader(data, draws, batch_size, device, seed, params)
    if distributed.is_distributed():
        raise UserError(f"{data.name} is a CIFAR-sized dataset: its runs take one device, not {distributed.world_size()}",
                        hint="launch it as one process; data-parallel runs are for imagenet_lt, places_lt, inat2018")
    kind = reference_loader.ReferenceLoader if params["loader"] == "dataloader" else loader.DeviceLoader
    return kind(data, draws, batch_size, device, seed, padding=params["crop_padding"], flip=params["flip"])


def eval_batches(data, x, y, device, batch_size: int, params: dict):
    """(normalised images, labels) on the device for the given images, un-augmented, in order."""
    if isinstance(data, ImageFileData):
        return image_loader.eval_batches(data, x, y, device, batch_size, params["image_size"])
    return loader.eval_batches(x, y, data.mean, data.std, device, batch_size)
