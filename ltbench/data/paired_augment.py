"""The stronger augmentations of the contrastive methods' views, each a view of its own that a
Draw's `per_view` can name (ltbench.data.loader.AUGMENTATIONS):

- PaCo's CIFAR recipe (Cui et al., ICCV 2021; dvlab-research/Parametric-Contrastive-Learning@fe56535,
  PaCo/LT/paco_cifar.py L312-332, L367-368, `--aug cifar100`): the query RandomCrop(32, 4) + flip +
  AutoAugment's CIFAR-10 policy + Cutout(1 hole, 16) (`autoaugment_cutout`), the key SimCLR's
  RandomResizedCrop(0.2, 1) + flip + ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8 + grayscale p 0.2 +
  Gaussian blur p 0.5 (`simclr_blur`).
- The RandAugment recipes of BCL (FlamieZhu/Balanced-Contrastive-Learning@f72d070 main.py
  L149-181) and of PaCo on ImageNet-LT and iNaturalist (PaCo/LT/paco_lt.py L325-373):
  `rand_cls` (augmentation_randncls: RandomResizedCrop(0.08, 1), flip, ColorJitter(0.4, 0.4, 0.4, 0),
  RandAugment rand-n2-m10-mstd0.5), `sim_rand` (augmentation_randnclsstack: SimAugment, then
  RandAugment), `sim_blur` (paco_lt.py's augmentation_sim: RandomResizedCrop(0.08, 1),
  ColorJitter(0.4, 0.4, 0.4, 0) always, grayscale p 0.2, blur p 0.5, flip) and `sim_blur_rand`
  (paco_lt.py's augmentation_randnclsstack: sim_blur, then RandAugment).

AutoAugment is torchvision's (AutoAugmentPolicy.CIFAR10, the same 25 sub-policies as PaCo's
autoaug.py CIFAR10Policy) and departs from autoaug.py in two ways, both torchvision's: shears
interpolate nearest rather than bicubic, and the magnitude bins are torchvision's; it fills with
grey 128 as autoaug.py.

RandAugment is timm's `rand_augment_transform`, built as the originals build theirs (BCL main.py
L149-150, L157; paco_lt.py L349-350, L359): config 'rand-n2-m10-mstd0.5', ra_params translate_const
int(224 * 0.45) and img_mean the ImageNet mean in 0..255. The originals' randaugment.py (the same
file in both repositories) is a copy of an early timm auto_augment.py; against the installed timm
its RandAugment draws the same way and differs only in names: the same 15 ops (AutoContrast,
Equalize, Invert, Rotate, Posterize, Solarize, SolarizeAdd, Color, Contrast, Brightness, Sharpness,
ShearX/Y, TranslateX/YRel; no Identity), the op pair chosen with replacement by numpy, each applied
with p 0.5 (timm's `rand_augment_ops` prob, 'p' absent from the config), the magnitude drawn from
N(10, 0.5) and clipped to [0, 10], signs at random, interpolation bilinear or bicubic at random.
The copy's PosterizeTpu is timm's Posterize (the same level, 0 to 4 bits kept); timm clamps
Solarize's threshold at 256 and SolarizeAdd's addend at 128, bounds a level of at most 10 never
reaches; the copy has no 'inc' (increasing) variants, and timm's default, inc0, is what it has.
Given the same Python and numpy generator states, the copy's transform and timm 1.0.31's return
the same image (checked on 500 noise images each of 224 and 32 pixels, BCL's copy and PaCo's).
The translations are TranslateXRel/YRel, 0.45 of the image's side at level 10, so they scale
with the image by themselves; translate_const, used only by the absolute TranslateX/Y outside
RandAugment's list, is set to int(side * 0.45) as the originals' int(224 * 0.45) is to 224. The
originals apply RandAugment only on ImageNet-LT, iNaturalist and Places (PaCo's CIFAR recipe is
AutoAugment + Cutout and BCL's main.py builds no CIFAR loader), so no original sets it for
32-pixel images. On grey images the fill is the mean's ITU-R 601 luma, as PIL takes one value.

Randomness: timm draws from Python's `random` (op probability, magnitude, sign, interpolation) and
numpy's global generator (the op pair). Each call saves both states, seeds them from a seed the
caller draws (from the batch's generator, a sample's numpy generator, or a DataLoader item's
seed), applies the ops image by image to PIL images, and restores them, as AutoAugment runs
inside a fork of torch's generator; so a run stays a function of its seed and resumes the same.
"""

import math
import random
from contextlib import contextmanager
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data.auto_augment import rand_augment_transform
from torchvision.transforms import AutoAugment, AutoAugmentPolicy

from ltbench.data import augment

GREY = 128

RAND_OPS, RAND_MAGNITUDE = 2, 10  # BCL main.py L68-69 / paco_lt.py L129-130: --randaug_m 10, --randaug_n 2
# main.py L149-150 / paco_lt.py L349-350: ra_params img_mean, the ImageNet mean in 0..255
RAND_FILL = tuple(min(255, round(255 * m)) for m in (0.485, 0.456, 0.406))
RAND_MAGNITUDE_STD = 0.5  # main.py L157 / paco_lt.py L359: 'rand-n{}-m{}-mstd0.5'
RAND_TRANSLATE = 0.45  # main.py L149 / paco_lt.py L350: translate_const=int(224 * 0.45)


def rand_fill(channels: int) -> list[int]:
    """RAND_FILL on an RGB image; on a grey one its ITU-R 601 luma."""
    if channels == 3:
        return list(RAND_FILL)
    return [round(0.299 * RAND_FILL[0] + 0.587 * RAND_FILL[1] + 0.114 * RAND_FILL[2])] * channels


@lru_cache(maxsize=None)
def timm_randaugment(side: int, channels: int, num_ops: int = RAND_OPS, magnitude: int = RAND_MAGNITUDE):
    """timm's RandAugment with the originals' config string and ra_params, for images of this side."""
    fill = rand_fill(channels)
    hparams = {"translate_const": int(side * RAND_TRANSLATE), "img_mean": tuple(fill) if channels == 3 else fill[0]}
    return rand_augment_transform(f"rand-n{num_ops}-m{magnitude}-mstd{RAND_MAGNITUDE_STD}", hparams)


@contextmanager
def python_and_numpy_seeded(seed: int):
    """Python's and numpy's global generators seeded from `seed` inside, as they were outside."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed([seed & 0xFFFFFFFF, seed >> 32])
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def randaugment_pil(images: list[Image.Image], seed: int, num_ops: int = RAND_OPS,
                    magnitude: int = RAND_MAGNITUDE) -> list[Image.Image]:
    """timm's RandAugment on each PIL image in turn, its draws seeded from `seed` alone."""
    with python_and_numpy_seeded(seed):
        return [timm_randaugment(img.width, len(img.getbands()), num_ops, magnitude)(img) for img in images]


def _seed(gen: torch.Generator) -> int:
    """A seed for a batch's per-image draws, from the batch's generator."""
    return int(torch.randint(0, 2**62, (1,), device=gen.device, generator=gen))


def _image_by_image(transform, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    seed = _seed(gen)
    # torchvision draws from the global CPU generator: seed that alone, inside a fork, so the
    # run's other random streams (and CUDA's) are untouched
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        return torch.stack([transform(image) for image in x])


def autoaugment(x: torch.Tensor, gen: torch.Generator, policy: str = "cifar10") -> torch.Tensor:
    """torchvision's AutoAugment on each uint8 image of the batch, each with its own sub-policy."""
    return _image_by_image(AutoAugment(AutoAugmentPolicy(policy), fill=[GREY] * x.shape[1]), x, gen)


def randaugment(x: torch.Tensor, gen: torch.Generator, num_ops: int = RAND_OPS,
                magnitude: int = RAND_MAGNITUDE) -> torch.Tensor:
    """timm's RandAugment (the originals' rand-n2-m10-mstd0.5) on each uint8 image of the batch,
    each with its own ops, magnitudes and signs."""
    seed = _seed(gen)
    hwc = x.permute(0, 2, 3, 1).cpu().numpy()
    images = [Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image) for image in hwc]
    out = np.stack([np.asarray(image) for image in randaugment_pil(images, seed, num_ops, magnitude)])
    return torch.from_numpy(out.reshape(hwc.shape)).permute(0, 3, 1, 2).contiguous().to(x.device)


def cutout(x: torch.Tensor, gen: torch.Generator, length: int = 16) -> torch.Tensor:
    """Cutout (DeVries and Taylor 2017) with one hole as autoaug.py's Cutout: a length x length
    square around a uniform centre, clipped at the border, set to 0 (black, since autoaug.py
    cuts after ToTensor and before Normalize)."""
    b, _, h, w = x.shape
    centre_y = torch.randint(0, h, (b, 1), device=x.device, generator=gen)
    centre_x = torch.randint(0, w, (b, 1), device=x.device, generator=gen)
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    inside_y = (rows >= centre_y - length // 2) & (rows < centre_y + length // 2)  # (b, h)
    inside_x = (cols >= centre_x - length // 2) & (cols < centre_x + length // 2)  # (b, w)
    hole = inside_y[:, None, :, None] & inside_x[:, None, None, :]
    return x.masked_fill(hole, 0)


def random_gaussian_blur(x: torch.Tensor, gen: torch.Generator, sigma=(0.1, 2.0), p: float = 0.5) -> torch.Tensor:
    """RandomApply([GaussianBlur(sigma uniform in [0.1, 2])], p) as MoCo v2's loader.GaussianBlur,
    one sigma per image. PIL's GaussianBlur(radius) there takes the radius as the standard
    deviation; here the kernel is an exact Gaussian out to 3 sigma, edges replicated."""
    b, c, h, w = x.shape
    sigmas = torch.empty(b, device=x.device).uniform_(*sigma, generator=gen)
    chosen = torch.rand(b, device=x.device, generator=gen) < p
    half = math.ceil(3 * sigma[1])
    offsets = torch.arange(-half, half + 1, device=x.device, dtype=torch.float)
    kernels = torch.exp(-0.5 * (offsets / sigmas[:, None]) ** 2)
    kernels = (kernels / kernels.sum(1, keepdim=True)).repeat_interleave(c, dim=0)  # (b * c, k)
    size = 2 * half + 1
    flat = F.pad(x.float().reshape(1, b * c, h, w), (half,) * 4, mode="replicate")
    flat = F.conv2d(flat, kernels.view(b * c, 1, 1, size), groups=b * c)
    flat = F.conv2d(flat, kernels.view(b * c, 1, size, 1), groups=b * c)
    blurred = flat.view(b, c, h, w).round().clamp(0, 255).to(x.dtype)
    return torch.where(chosen[:, None, None, None], blurred, x)


def autoaugment_cutout(x: torch.Tensor, gen: torch.Generator, padding: int = 4, flip: bool = True) -> torch.Tensor:
    """PaCo's query view on CIFAR (paco_cifar.py L312-320 `augmentation_regular`)."""
    return cutout(autoaugment(augment.standard(x, gen, padding, flip), gen), gen)


def simclr_blur(x: torch.Tensor, gen: torch.Generator, padding: int = 4, flip: bool = True,
                blur_p: float = 0.5) -> torch.Tensor:
    """PaCo's key view on CIFAR (paco_cifar.py L322-332 `augmentation_sim_cifar`): the
    contrastive augmentation with SimCLR's resized crop and colour jitter 0.4, then blur."""
    x = augment.contrastive(x, gen, padding, flip, crop="resized", grayscale_p=0.2, color_jitter=0.4)
    return random_gaussian_blur(x, gen, p=blur_p)


def crop_flip_randaugment(x: torch.Tensor, gen: torch.Generator, padding: int = 4, flip: bool = True,
                          num_ops: int = RAND_OPS, magnitude: int = RAND_MAGNITUDE) -> torch.Tensor:
    """The CIFAR crop and flip, then RandAugment."""
    return randaugment(augment.standard(x, gen, padding, flip), gen, num_ops, magnitude)


RAND_SCALE = (0.08, 1.0)  # main.py L152 / paco_lt.py L365: RandomResizedCrop(224, scale=(0.08, 1.))
RAND_JITTER = 0.4  # main.py L154-156: RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.0)], p=1.0)


def rand_cls(x: torch.Tensor, gen: torch.Generator, padding: int = 4, flip: bool = True,
             num_ops: int = RAND_OPS, magnitude: int = RAND_MAGNITUDE) -> torch.Tensor:
    """BCL's classifier view and PaCo's large-dataset query (augmentation_randncls); a resized crop
    takes no padding."""
    x = augment.random_resized_crop(x, gen, scale=RAND_SCALE)
    if flip:
        x = augment.random_flip(x, gen)
    x = augment.random_color_jitter(x, gen, RAND_JITTER, p=1.0, hue=0.0)
    return randaugment(x, gen, num_ops, magnitude)


def sim_rand(x: torch.Tensor, gen: torch.Generator, padding: int = 4, flip: bool = True,
             num_ops: int = RAND_OPS, magnitude: int = RAND_MAGNITUDE) -> torch.Tensor:
    """BCL's `rand` contrastive view (augmentation_randnclsstack, main.py L161-171): SimAugment, then
    RandAugment."""
    return randaugment(augment.sim(x, gen, padding, flip), gen, num_ops, magnitude)


def sim_blur(x: torch.Tensor, gen: torch.Generator, padding: int = 4, flip: bool = True,
             blur_p: float = 0.5) -> torch.Tensor:
    """PaCo's key on the large datasets (paco_lt.py L325-335 augmentation_sim): RandomResizedCrop
    (0.08, 1), ColorJitter(0.4, 0.4, 0.4, 0) always, grayscale p 0.2, SimCLR's blur, flip; a
    resized crop takes no padding."""
    x = augment.random_resized_crop(x, gen, scale=augment.SIM_SCALE)
    if flip:
        x = augment.random_flip(x, gen)
    x = augment.random_color_jitter(x, gen, augment.SIM_COLOR_JITTER, p=1.0, hue=0.0)
    return random_gaussian_blur(augment.random_grayscale(x, gen, 0.2), gen, p=blur_p)


def sim_blur_rand(x: torch.Tensor, gen: torch.Generator, padding: int = 4, flip: bool = True,
                  blur_p: float = 0.5, num_ops: int = RAND_OPS, magnitude: int = RAND_MAGNITUDE) -> torch.Tensor:
    """PaCo's ResNeXt-50 query on ImageNet-LT (paco_lt.py L351-362 augmentation_randnclsstack):
    sim_blur, then RandAugment."""
    return randaugment(sim_blur(x, gen, padding, flip, blur_p), gen, num_ops, magnitude)
