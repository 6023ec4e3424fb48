"""A moving average of the training features that a method keeps for evaluation.

Tang et al. (NeurIPS 2020, Assumption 1) estimate the head direction of a long-tailed training
set as the exponential moving average of the features, x_t = mu x_{t-1} + mean(batch_t), decayed
like SGD momentum; TDE removes its effect at test time. Any statistic of that kind belongs in a
buffer of the method (an nn.Module), so the checkpoint carries it and a resumed run goes on
from it.

Data-parallel, each step's mean is the global batch's, all ranks' features together, as the
original's single-process nn.DataParallel gathers the whole batch's features before averaging
them (Long-Tailed-Recognition.pytorch classification/run_networks.py L97, L215): every rank then
holds the same average, the one a single device would, and DDP's broadcast of rank 0's buffers
before each forward changes nothing.
"""

import torch
from torch import nn

from ltbench import distributed


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
        self.value.mul_(decay).add_(distributed.batch_mean(features.float()))
