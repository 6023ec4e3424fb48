"""Two differently augmented views of the same images, as MoCo-style methods draw a query and
a key: PaCo's CIFAR recipe (Cui et al., ICCV 2021; dvlab-research/Parametric-Contrastive-Learning
@fe56535, PaCo/LT/paco_cifar.py L312-332, L367-368, `--aug cifar100`) gives the query
RandomCrop(32, 4) + flip + AutoAugment's CIFAR-10 policy + Cutout(1 hole, 16), and the key
SimCLR's RandomResizedCrop(0.2, 1) + flip + ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8 + grayscale
p 0.2 + Gaussian blur p 0.5.

A draw's views all take one augmentation, so the pair is one augmentation (`query_key`) whose
output stacks the query views over the key views: 2N images for N, split by the method.

AutoAugment is torchvision's (AutoAugmentPolicy.CIFAR10, the same 25 sub-policies as PaCo's
autoaug.py CIFAR10Policy) applied image by image, its random draws seeded from the batch's
generator, so a run stays a function of its seed and resumes the same. Two departures from
autoaug.py, both torchvision's: shears interpolate nearest rather than bicubic, and the
magnitude bins are torchvision's. Geometric ops fill with grey 128, as autoaug.py does.
"""

import math

import torch
import torch.nn.functional as F
from torchvision.transforms import AutoAugment, AutoAugmentPolicy

from ltbench.data import augment

GREY = 128


def autoaugment(x: torch.Tensor, gen: torch.Generator, policy: str = "cifar10") -> torch.Tensor:
    """torchvision's AutoAugment on each uint8 image of the batch, each with its own sub-policy."""
    transform = AutoAugment(AutoAugmentPolicy(policy), fill=[GREY] * x.shape[1])
    seed = int(torch.randint(0, 2**62, (1,), device=gen.device, generator=gen))
    # torchvision draws from the global CPU generator: seed that alone, inside a fork, so the
    # run's other random streams (and CUDA's) are untouched
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        return torch.stack([transform(image) for image in x])


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


VIEWS = {"autoaugment_cutout": autoaugment_cutout, "simclr_blur": simclr_blur, "standard": augment.standard,
         "contrastive": augment.contrastive}


def query_key(x: torch.Tensor, gen: torch.Generator, padding: int = 4, flip: bool = True,
              query: str = "autoaugment_cutout", key: str = "simclr_blur",
              key_options: dict | None = None) -> torch.Tensor:
    """The query views (rows 0..N-1) over the key views (rows N..2N-1) of the same N images;
    `key_options` are keyword arguments of the key's augmentation (simclr_blur's blur_p, say)."""
    for name in (query, key):
        if name not in VIEWS:
            raise ValueError(f"a query_key view must be one of {tuple(VIEWS)}, got {name!r}")
    queries = VIEWS[query](x, gen, padding=padding, flip=flip)
    return torch.cat([queries, VIEWS[key](x, gen, padding=padding, flip=flip, **(key_options or {}))])
