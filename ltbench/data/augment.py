"""Batched augmentation on the device, with per-sample random parameters.

The whole batch is one tensor; crops are two gathers with per-sample offsets and flips one
`where`, so there is no per-image Python and no PIL. Randomness comes from a generator on
the batch's device whose state is checkpointed.
"""

import math

import torch
import torch.nn.functional as F


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


def random_resized_crop(x: torch.Tensor, gen: torch.Generator, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)) -> torch.Tensor:
    """RandomResizedCrop(size, scale) as in SupCon's CIFAR recipe, bilinear, one box per image.

    torchvision retries a box that does not fit ten times, then falls back to a centre crop;
    here a box that does not fit is clamped to the image instead, so every image gets one draw.
    """
    b, c, h, w = x.shape
    area = torch.empty(b, device=x.device).uniform_(*scale, generator=gen) * h * w
    log_ratio = torch.empty(b, device=x.device).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    box_w = (area * log_ratio.exp()).sqrt().round().clamp(1, w)
    box_h = (area / log_ratio.exp()).sqrt().round().clamp(1, h)
    left = (torch.rand(b, device=x.device, generator=gen) * (w - box_w + 1)).floor()
    top = (torch.rand(b, device=x.device, generator=gen) * (h - box_h + 1)).floor()
    # affine_grid maps the output's [-1, 1] square onto the box, in the input's [-1, 1] coordinates
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 1, 1] = box_w / w, box_h / h
    theta[:, 0, 2] = (2 * left + box_w) / w - 1
    theta[:, 1, 2] = (2 * top + box_h) / h - 1
    grid = F.affine_grid(theta, (b, c, h, w), align_corners=False)
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.round().clamp(0, 255).to(x.dtype)


def _luma(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, as torchvision's rgb_to_grayscale; a one-channel image is its own."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def random_grayscale(x: torch.Tensor, gen: torch.Generator, p: float = 0.2) -> torch.Tensor:
    """RandomGrayscale(p); a no-op on one-channel images, which are grey already."""
    if x.shape[1] == 1 or p == 0:
        return x
    gray = _luma(x.float()).round().clamp(0, 255).to(x.dtype).expand_as(x)
    chosen = torch.rand(x.shape[0], device=x.device, generator=gen) < p
    return torch.where(chosen[:, None, None, None], gray, x)


def _factors(b: int, spread: float, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.empty(b, 1, 1, 1, device=x.device).uniform_(max(0.0, 1 - spread), 1 + spread, generator=gen)


def random_color_jitter(x: torch.Tensor, gen: torch.Generator, strength: float, p: float = 0.8,
                        hue: float | None = None) -> torch.Tensor:
    """RandomApply([ColorJitter(s, s, s, hue)], p) as in SimCLR/SupCon (s = 0.4, hue s / 4 there,
    the default; 0 leaves hue alone, as the RandAugment recipes' ColorJitter(0.4, 0.4, 0.4, 0)).

    Two departures from torchvision, both to keep the batch one tensor: the four adjustments
    run in a fixed order (brightness, contrast, saturation, hue) rather than a random one,
    and hue turns the colour around the grey axis (a YIQ rotation) rather than shifting the
    HSV hue. On one-channel images only brightness and contrast mean anything.
    """
    b = x.shape[0]
    img = x.float() / 255
    img = (img * _factors(b, strength, x, gen)).clamp(0, 1)
    mean = _luma(img).mean(dim=(1, 2, 3), keepdim=True)
    contrast = _factors(b, strength, x, gen)
    img = (contrast * img + (1 - contrast) * mean).clamp(0, 1)
    hue = strength / 4 if hue is None else hue
    if x.shape[1] == 3:
        saturation = _factors(b, strength, x, gen)
        img = (saturation * img + (1 - saturation) * _luma(img)).clamp(0, 1)
        if hue > 0:
            angle = (torch.rand(b, device=x.device, generator=gen) * 2 - 1) * hue * 2 * math.pi
            img = _rotate_hue(img, angle).clamp(0, 1)
    jittered = (img * 255).round().to(x.dtype)
    chosen = torch.rand(b, device=x.device, generator=gen) < p
    return torch.where(chosen[:, None, None, None], jittered, x)


_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _rotate_hue(img: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    to_yiq = _RGB_TO_YIQ.to(img.device)
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.zeros(len(angle), 3, 3, device=img.device)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2], rotation[:, 2, 1], rotation[:, 2, 2] = cos, -sin, sin, cos
    matrix = torch.linalg.inv(to_yiq) @ rotation @ to_yiq  # (b, 3, 3), acting on RGB
    return torch.einsum("bij,bjhw->bihw", matrix, img)


CONTRASTIVE_CROPS = ("pad", "resized")


def contrastive(x: torch.Tensor, gen: torch.Generator, padding: int = 4, flip: bool = True, crop: str = "pad",
                grayscale_p: float = 0.2, color_jitter: float = 0.0) -> torch.Tensor:
    """The hybrid networks' views (Wang et al. 2021): random crop, horizontal flip, random
    grayscale p 0.2; colour jitter off unless asked for, as the paper lists none.

    `crop="pad"` is the CIFAR RandomCrop(32, padding=4) every other method here uses;
    `crop="resized"` is SupCon's RandomResizedCrop(32, scale=(0.2, 1)). The paper's
    "random cropping with size 32x32" fits both, so it is a setting.
    """
    if crop not in CONTRASTIVE_CROPS:
        raise ValueError(f"crop must be one of {CONTRASTIVE_CROPS}, got {crop!r}")
    x = random_resized_crop(x, gen) if crop == "resized" else random_crop(x, padding, gen)
    if flip:
        x = random_flip(x, gen)
    if color_jitter > 0:
        x = random_color_jitter(x, gen, color_jitter)
    return random_grayscale(x, gen, grayscale_p)


# BCL's SimAugment: FlamieZhu/Balanced-Contrastive-Learning@f72d070 main.py L172-181
SIM_SCALE = (0.08, 1.0)  # torchvision RandomResizedCrop's default scale, which main.py L173 keeps
SIM_COLOR_JITTER = 0.4


def sim(x: torch.Tensor, gen: torch.Generator, padding: int = 4, flip: bool = True) -> torch.Tensor:
    """SimAugment, the contrastive views of BCL (Zhu et al. 2022, main.py's augmentation_sim; MoCo
    v2's without the blur): RandomResizedCrop(scale 0.08 .. 1), horizontal flip,
    RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p 0.8), RandomGrayscale(0.2). A resized crop
    takes no padding: `padding` is accepted as every augmentation's is, and unused."""
    x = random_resized_crop(x, gen, scale=SIM_SCALE)
    if flip:
        x = random_flip(x, gen)
    return random_grayscale(random_color_jitter(x, gen, SIM_COLOR_JITTER), gen, 0.2)
