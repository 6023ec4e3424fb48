"""Mixup and CutMix as a batch transform: a Draw that mixes (`Draw.mix`) has each of its batches'
images paired with another image of the same batch and blended, before the method's loss sees
them. The method receives the mixed views, both label sets (`Batch.labels`, `Batch.labels_b`)
and lambda (`Batch.lam`); `mixed_loss` is the loss of Zhang et al. (ICLR 2018), lambda times
the criterion on the first labels plus 1 - lambda times it on the partners'.

Mixing is the method's choice, per Draw, not a trainer-wide switch: only a method knows whether
its loss can use two label sets (a contrastive loss or a class-balanced stage 2 cannot), and a
two-stage method's stage 2 draws batches of its own. A method declares the choice among its
hyperparameters (`mix_settings`), so it is part of the run id and of `ltbench list METHOD`.

Randomness comes from torch's global generator, which the runner seeds from the spec and every
checkpoint saves and restores, so a run and its resume mix alike; lambda is drawn on the CPU,
so a step never waits on the device for it.
"""

from typing import TYPE_CHECKING

import torch

from ltbench.settings import Setting

if TYPE_CHECKING:
    from ltbench.method import Batch, Draw

MIXES = ("none", "mixup", "cutmix")
MIXUP = "Zhang et al. 2018 (mixup, ICLR)"
CUTMIX = "Yun et al. 2019 (CutMix, ICCV), Algorithm A1"


def check_mix(mix: str, alpha: float) -> None:
    if mix not in MIXES:
        raise ValueError(f"Draw.mix must be one of {', '.join(MIXES)}, got {mix!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"Draw.mix_alpha must be a number > 0 (lambda ~ Beta(alpha, alpha)), got {alpha!r}")


def mix_settings(mix: str, alpha: float, mix_source: str, alpha_source: str) -> dict[str, Setting]:
    """The two hyperparameters of a method that mixes its batches: `batch_mix` and `mix_alpha`."""
    return {
        "batch_mix": Setting(mix, "how the training batch's images are mixed in pairs: none, mixup (Zhang et al. "
                             "2018) or cutmix (Yun et al. 2019)", choices=MIXES, source=mix_source),
        "mix_alpha": Setting(alpha, "lambda ~ Beta(alpha, alpha), the first image's share of a mixed pair",
                             above=0, high=100, source=alpha_source),
    }


def mix_options(hp: dict) -> dict:
    """A Draw's mixing fields from a method's `mix_settings` hyperparameters."""
    return {"mix": hp["batch_mix"], "mix_alpha": hp["mix_alpha"]}


def beta_sample(alpha: float) -> float:
    """lambda ~ Beta(alpha, alpha), from torch's global CPU generator."""
    concentration = torch.tensor(float(alpha))
    return float(torch.distributions.Beta(concentration, concentration).sample())


def cutmix_box(height: int, width: int, lam: float) -> tuple[slice, slice]:
    """CutMix's box: sides sqrt(1 - lambda) of the image's, centred on a uniform pixel and clipped
    to the image (Yun et al.'s rand_bbox), so its area can be less than 1 - lambda."""
    cut = (1.0 - lam) ** 0.5
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = int(torch.randint(height, (1,))), int(torch.randint(width, (1,)))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return slice(top, bottom), slice(left, right)


def mix_batch(batch: "Batch", draw: "Draw") -> None:
    """Mix `batch` in place as `draw` says: one lambda and one pairing (a random permutation of the
    batch) per step, the same for every view of the step's images."""
    if draw.mix == "none":
        return
    lam = beta_sample(draw.mix_alpha)
    n = len(batch.labels)
    partner = torch.randperm(n).to(batch.labels.device)
    if draw.mix == "mixup":
        batch.views = [lam * v + (1 - lam) * v[partner] for v in batch.views]
    else:
        rows, cols = cutmix_box(*batch.views[0].shape[-2:], lam)
        views = []
        for v in batch.views:
            v = v.clone()
            v[..., rows, cols] = v[partner][..., rows, cols]
            views.append(v)
        batch.views = views
        # lambda becomes the share of the image left unpasted, as Yun et al. correct it
        height, width = batch.views[0].shape[-2:]
        lam = 1.0 - (rows.stop - rows.start) * (cols.stop - cols.start) / (height * width)
    batch.labels_b, batch.lam = batch.labels[partner], lam


def mixed_loss(criterion, logits: torch.Tensor, batch: "Batch") -> torch.Tensor:
    """lam * criterion(logits, labels) + (1 - lam) * criterion(logits, labels_b) (MiSLAS's
    mixup_criterion; Zhang et al.'s); the plain criterion where the batch was not mixed."""
    if batch.labels_b is None:
        return criterion(logits, batch.labels)
    return batch.lam * criterion(logits, batch.labels) + (1 - batch.lam) * criterion(logits, batch.labels_b)
