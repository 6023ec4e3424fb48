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

AutoAugment and RandAugment are torchvision's, applied image by image with their random draws
seeded from the batch's generator, so a run stays a function of its seed and resumes the same.
AutoAugment (AutoAugmentPolicy.CIFAR10, the same 25 sub-policies as PaCo's autoaug.py
CIFAR10Policy) departs from autoaug.py in two ways, both torchvision's: shears interpolate
nearest rather than bicubic, and the magnitude bins are torchvision's. RandAugment departs from
the originals' randaugment.py (timm's `rand-n2-m10-mstd0.5`) where torchvision's differs: its 14
ops (Identity in, Invert and SolarizeAdd out), each chosen op always applied (randaugment.py
applies each with p 0.5), one fixed magnitude (no std 0.5 around it), nearest interpolation.
The magnitude keeps the originals' scale: with 11 bins, m = 10 is each op's full range, as
randaugment.py's _MAX_LEVEL = 10. Geometric ops fill with grey 128 (autoaug.py) or, for the
RandAugment recipes, the ImageNet mean (the originals' ra_params img_mean).
"""

import math

import torch
import torch.nn.functional as F
from torchvision.transforms import AutoAugment, AutoAugmentPolicy, RandAugment

from ltbench.data import augment

GREY = 128


# randaugment.py's levels run to _MAX_LEVEL = 10; torchvision's bins to num_magnitude_bins - 1
RAND_BINS = 11
RAND_OPS, RAND_MAGNITUDE = 2, 10  # BCL main.py L68-69 / paco_lt.py L129-130: --randaug_m 10, --randaug_n 2
# main.py L149-150 / paco_lt.py L349-350: ra_params img_mean, the ImageNet mean in 0..255
RAND_FILL = tuple(min(255, round(255 * m)) for m in (0.485, 0.456, 0.406))


def rand_fill(channels: int) -> list[int]:
    """RAND_FILL on an RGB image; on a grey one its ITU-R 601 luma."""
    if channels == 3:
        return list(RAND_FILL)
    return [round(0.299 * RAND_FILL[0] + 0.587 * RAND_FILL[1] + 0.114 * RAND_FILL[2])] * channels


def _image_by_image(transform, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    seed = int(torch.randint(0, 2**62, (1,), device=gen.device, generator=gen))
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
    """torchvision's RandAugment(num_ops, magnitude of 10) on each uint8 image of the batch, each
    with its own ops and signs."""
    transform = RandAugment(num_ops, magnitude, num_magnitude_bins=RAND_BINS, fill=rand_fill(x.shape[1]))
    return _image_by_image(transform, x, gen)


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
    """The CIFAR crop and flip, then RandAugment: torchvision's RandAugment recipe."""
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
