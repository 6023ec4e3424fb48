"""The ImageNet-style views of one decoded image, as uint8 CHW tensors.

Training: RandomResizedCrop + horizontal flip (+ colour jitter, grayscale, SimCLR's blur,
RandAugment), as torchvision draws them, but from a numpy generator the caller seeds per
sample, so a sample's view depends on the run's seed and its place in the epoch, not on which
worker, rank or resumed process made it. RandAugment is timm's as the originals build it, its
Python and numpy draws seeded from that numpy generator and their global states restored after
(ltbench.data.paired_augment).
Evaluation: Resize(256) + CenterCrop(224), scaled with the image size.
"""

import math

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter

from ltbench.data.paired_augment import RAND_MAGNITUDE, randaugment_pil

# ImageNet's standard crop scale; SupCon's contrastive views use (0.2, 1)
STANDARD_SCALE = (0.08, 1.0)
CONTRASTIVE_SCALE = (0.2, 1.0)
RATIO = (3 / 4, 4 / 3)


def resized_crop_box(width: int, height: int, rng: np.random.Generator, scale=STANDARD_SCALE,
                     ratio=RATIO) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params: (left, top, width, height)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    # ten misses: the centre crop at the nearest allowed aspect ratio
    if width / height < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif width / height > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def color_jitter(img: Image.Image, strength: float, hue: float, rng: np.random.Generator) -> Image.Image:
    """ColorJitter(strength, strength, strength, hue): factors drawn uniformly, the four
    adjustments in random order, as torchvision applies them."""
    low = max(0.0, 1 - strength)
    factors = [rng.uniform(low, 1 + strength) for _ in range(3)] + [rng.uniform(-hue, hue)]
    adjust = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for i in rng.permutation(4):
        if i < 3 or hue > 0:
            img = adjust[i](img, factors[i])
    return img


def gaussian_blur(img: Image.Image, rng: np.random.Generator, sigma=(0.1, 2.0)) -> Image.Image:
    """MoCo v2's loader.GaussianBlur: PIL's blur with a radius uniform in [0.1, 2]."""
    return img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(*sigma)))


def train_view(img: Image.Image, size: int, rng: np.random.Generator, scale=STANDARD_SCALE, flip: bool = True,
               jitter: float = 0.0, jitter_hue: float = 0.0, jitter_p: float = 1.0,
               grayscale_p: float = 0.0, blur_p: float = 0.0, rand_ops: int = 0,
               rand_magnitude: int = RAND_MAGNITUDE) -> torch.Tensor:
    left, top, w, h = resized_crop_box(*img.size, rng, scale)
    img = img.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
    if flip and rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if jitter > 0 and rng.random() < jitter_p:
        img = color_jitter(img, jitter, jitter_hue, rng)
    if grayscale_p > 0 and rng.random() < grayscale_p:
        img = TF.rgb_to_grayscale(img, num_output_channels=3)
    if blur_p > 0 and rng.random() < blur_p:
        img = gaussian_blur(img, rng)
    if rand_ops > 0:
        img = randaugment_pil([img], int(rng.integers(2**62)), rand_ops, rand_magnitude)[0]
    return TF.pil_to_tensor(img)


def eval_view(img: Image.Image, size: int) -> torch.Tensor:
    # 256 / 224 is the ImageNet evaluation ratio; kept at other sizes
    img = TF.resize(img, round(size * 256 / 224), interpolation=TF.InterpolationMode.BILINEAR)
    return TF.pil_to_tensor(TF.center_crop(img, [size, size]))
