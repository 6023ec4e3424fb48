"""Batched augmentation on the device, with per-sample random parameters.

The whole batch is one tensor; crops are two gathers with per-sample offsets and flips one
`where`, so there is no per-image Python and no PIL. Randomness comes from a generator on
the batch's device whose state is checkpointed.
"""

import torch


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    """RandomCrop(size, padding) with zero padding, a different offset for every image."""
    if padding == 0:
        return x
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    offsets = torch.randint(0, 2 * padding + 1, (2, b), device=x.device, generator=gen)
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (b, h)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (b, w)
    padded = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * padding))
    return padded.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def random_flip(x: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    flip = torch.rand(x.shape[0], device=x.device, generator=gen) < p
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW -> float, ToTensor + Normalize."""
    return (x.float() / 255.0 - mean) / std


def standard(x: torch.Tensor, gen: torch.Generator, padding: int = 4, flip: bool = True) -> torch.Tensor:
    """The CIFAR-LT recipe: RandomCrop(32, padding=4) + RandomHorizontalFlip, on uint8."""
    x = random_crop(x, padding, gen)
    return random_flip(x, gen) if flip else x
