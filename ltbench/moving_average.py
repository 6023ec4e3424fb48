"""A moving average of the training features that a method keeps for evaluation.

Tang et al. (NeurIPS 2020, Assumption 1) estimate the head direction of a long-tailed training
set as the exponential moving average of the features, x_t = mu x_{t-1} + mean(batch_t), decayed
like SGD momentum; TDE removes its effect at test time. Any statistic of that kind belongs in a
buffer of the method (an nn.Module), so the checkpoint carries it and a resumed run goes on
from it; the trainer's `sync_buffers` gives every rank rank 0's after each epoch.
"""

import torch
from torch import nn


class FeatureMovingAverage(nn.Module):
    """x_t = decay * x_{t-1} + the batch's mean feature, as Long-Tailed-Recognition.pytorch's
    run_networks.py L215 accumulates `embed_mean`: a sum with decaying weights, not normalised
    by (1 - decay), which changes its length but not its direction."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("value", torch.zeros(dim))

    @torch.no_grad()
    def update(self, features: torch.Tensor, decay: float) -> None:
        # fp32 whatever the autocast: a sum over thousands of steps in bf16 would lose the recent ones
        self.value.mul_(decay).add_(features.detach().float().mean(0))
