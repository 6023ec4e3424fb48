"""Pieces several long-tailed methods share: class weights, class priors, the cosine classifier."""

import torch
import torch.nn.functional as F
from torch import nn

from ltbench.errors import UserError
from ltbench.settings import Setting


def effective_number_weights(class_counts: torch.Tensor, beta: float) -> torch.Tensor:
    """Cui et al. (CVPR 2019): w_j = (1 - beta) / (1 - beta^n_j), normalised to sum to C.
    beta = 0 gives every class weight 1."""
    counts = class_counts.double()
    weights = (1 - beta) / (1 - beta**counts)
    return (weights / weights.sum() * len(counts)).float()


def drw_start_epoch(epochs: int, start: float) -> int:
    """Deferred re-weighting starts at this 0-based epoch. LDAM-DRW starts at epoch 160 of 200,
    the epoch of the first learning-rate decay; rounded the way the trainer rounds milestones so
    the two stay together under any --epochs."""
    return round(start * epochs)


def drw_weights(class_counts: torch.Tensor, beta: float, epoch: int, epochs: int, start: float) -> torch.Tensor:
    """LDAM-DRW's `betas = [0, beta]; idx = epoch // 160`: uniform weights, then effective-number
    weights from the DRW start epoch on."""
    return effective_number_weights(class_counts, beta if epoch >= drw_start_epoch(epochs, start) else 0.0)


def log_prior(class_counts: torch.Tensor) -> torch.Tensor:
    """log pi_j, the training label distribution (Menon et al. 2021)."""
    counts = class_counts.float()
    return (counts / counts.sum()).log()


class NormedLinear(nn.Module):
    """LDAM-DRW's cosine classifier: cos(x, w_j), no bias. Weight stored (in, out) as in the
    original, whose init `uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)` gives unit columns."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.weight.data.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # LDAM scales cosines by s = 30: bf16 rounding of the cosine (~0.4 %) would become
        # logit noise of ~0.1, so this small product stays in fp32 under autocast
        with torch.autocast(x.device.type, enabled=False):
            return F.normalize(x.float(), dim=1) @ F.normalize(self.weight.float(), dim=0)


def require(condition: bool, message: str, hint: str | None = None) -> None:
    if not condition:
        raise UserError(message, hint=hint)


# Deferred re-weighting's two settings, shared by LDAM-DRW and CE-DRW
DRW_SETTINGS = {
    "drw_beta": Setting(0.9999, "effective-number beta of the re-weighting (Cui et al.)", low=0, below=1),
    "drw_start": Setting(0.8, "fraction of the epochs after which re-weighting starts (160 of 200)", low=0, high=1),
}


def classifier_stage2_settings(prefix: str, epochs: int) -> dict[str, Setting]:
    """Decoupling's classifier stage (classifier-balancing's ImageNet-LT configs: lr 0.2 cosine
    to 0, batch 512, wd 5e-4, 4 images per class draw) under `<prefix>_*` names."""
    return {
        f"{prefix}_lr": Setting(0.2, "stage-2 learning rate (cosine to 0)", above=0, high=1e3),
        f"{prefix}_epochs": Setting(epochs, "stage-2 epochs", low=1, high=100_000),
        f"{prefix}_batch_size": Setting(512, "stage-2 batch size", low=1, high=1_000_000),
        f"{prefix}_momentum": Setting(0.9, "stage-2 SGD momentum", low=0, below=1),
        f"{prefix}_weight_decay": Setting(5e-4, "stage-2 weight decay", low=0, high=1),
        f"{prefix}_per_class": Setting(4, "images of a class per class-balanced draw (ClassAwareSampler)", low=1,
                                       high=100_000),
    }


def classifier_stage2(hp: dict, prefix: str) -> dict:
    """Decoupling's classifier stage (Kang et al. 2020, classifier-balancing configs): SGD with
    momentum, cosine lr to 0 with no warm-up, class-balanced batches of `per_class` images per
    class draw; read from the method's `<prefix>_*` hyperparameters. The test set is evaluated
    once, after the last epoch: a best-of-few-epochs figure would only add selection on test."""
    epochs = hp[f"{prefix}_epochs"]
    return {
        "epochs": epochs, "batch_size": hp[f"{prefix}_batch_size"], "lr": hp[f"{prefix}_lr"],
        "momentum": hp[f"{prefix}_momentum"], "weight_decay": hp[f"{prefix}_weight_decay"],
        "schedule": "cosine", "warmup_epochs": 0, "cb_per_class": hp[f"{prefix}_per_class"], "eval_every": epochs,
    }

