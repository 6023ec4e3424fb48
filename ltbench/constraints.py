"""Constraints on weights, applied after an optimiser step (`Method.after_step`): projected
gradient descent, as Alshammari et al. (CVPR 2022, Sec. 3.1, Eq. 4-5) train under MaxNorm.

A method owns the parameters it constrains (its classifier, whose rows are its classes), so
the trainer only calls the hook; a method, built in or a plugin, declares the constraint's
settings with `max_norm_settings` and projects with `max_norm_` when `is_due` says so.
"""

import torch

from ltbench.method import Progress
from ltbench.settings import Setting

# when a projection runs: after every optimiser step (the paper's PGD, Eq. 5) or after the
# last step of each epoch (LTR-weight-balancing's train_model)
EVERY = ("step", "epoch")


@torch.no_grad()
def max_norm_(weight: torch.Tensor, radius: float | torch.Tensor) -> None:
    """Project each row of `weight` (one class's weight vector) onto the L2 ball of `radius`,
    in place: theta_k <- min(1, radius / ||theta_k||) theta_k (Eq. 5). Rows inside the ball
    are left exactly as they were."""
    norms = torch.linalg.vector_norm(weight.reshape(len(weight), -1), dim=1)
    outside = norms > radius
    scale = torch.where(outside, radius / norms.clamp_min(torch.finfo(norms.dtype).tiny), torch.ones_like(norms))
    weight.mul_(scale.view(-1, *([1] * (weight.dim() - 1))).to(weight.dtype))


def radius_between_norms(weight: torch.Tensor, fraction: float) -> float:
    """The radius LTR-weight-balancing's MaxNorm_via_PGD.setPerLayerThresh sets once, from the
    weights it starts to constrain: min + fraction (max - min) of their rows' L2 norms, so
    `fraction` 0 caps every class at the smallest norm and 1 at the largest."""
    norms = torch.linalg.vector_norm(weight.detach().reshape(len(weight), -1).float(), dim=1)
    return float(norms.min() + fraction * (norms.max() - norms.min()))


def is_due(every: str, progress: Progress) -> bool:
    """Whether a constraint applied `every` "step" or "epoch" projects after this step."""
    return every == "step" or progress.step == progress.steps - 1


def max_norm_settings(prefix: str, fraction: float, every: str, fraction_source: str,
                      every_source: str) -> dict[str, Setting]:
    """The settings of a MaxNorm constraint under `<prefix>_max_norm*` names: the radius as a
    fraction between the constrained rows' smallest and largest norms when it is set, and when
    the projection runs."""
    return {
        f"{prefix}_max_norm": Setting(fraction, "MaxNorm radius, as a fraction between the smallest (0) and largest "
                                      "(1) class weight norm of the classifier it starts from", low=0, high=1,
                                      source=fraction_source),
        f"{prefix}_max_norm_every": Setting(every, "project the classifier's rows onto the MaxNorm ball after every "
                                            "optimiser step or after each epoch's last step", choices=EVERY,
                                            source=every_source),
    }
