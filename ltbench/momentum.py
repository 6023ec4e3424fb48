"""A momentum (key) encoder and a queue of its features with their labels, as MoCo (He et al.,
CVPR 2020) keeps them and PaCo (Cui et al., ICCV 2021) reuses them: general pieces a method
that contrasts against earlier batches' features holds as submodules, so they move to the
device, checkpoint and resume with it.

- `MomentumEncoder`: theta_k <- m theta_k + (1 - m) theta_q after every step, over the
  parameters only. Its buffers (BatchNorm's running statistics) are its own, updated by its own
  forward passes in train mode, as MoCo's encoder_k's are (moco/builder.py
  `_momentum_update_key_encoder` zips `parameters()` alone). Data-parallel, its parameters
  follow the query encoder's, which DDP keeps equal on every rank, so they stay equal too; its
  forward is MoCo's batch shuffle (`distributed.on_shuffled_shares`; Parametric-Contrastive-
  Learning@fe56535 PaCo/LT/moco/builder.py L143-192, L211-218): each rank encodes a random share of the global batch, so BatchNorm's statistics
  of a key do not come from the batch its query was encoded with. Its BatchNorm statistics are
  each rank's until the epoch's end gives every rank rank 0's (`distributed.sync_buffers`); in
  the original, DDP's broadcast of rank 0's buffers before each forward does the same every
  step, and rank 0's statistics follow rank 0's shares alone either way.
- `FeatureQueue`: a ring of the last K features and their labels; each step's keys overwrite
  the oldest entries, from a pointer that wraps around.
"""

import copy
import itertools

import torch
import torch.nn.functional as F
from torch import nn

from ltbench import distributed

ENCODER = "encoder."


class MomentumEncoder(nn.Module):
    """An exponential moving average of an encoder, run without gradient.

    The trainer owns the backbone, and a method only sees it at its first step, so the copy is
    made there: `follow(backbone, head)` copies them the first time (MoCo's encoder_k starts as
    a copy of encoder_q) and moves the copy towards it every time after. A checkpoint loaded
    before that first step is kept and loaded into the copy as soon as it exists, so a resumed
    run continues from the saved average, not from a fresh copy.
    """

    def __init__(self, momentum: float):
        super().__init__()
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.momentum = momentum
        self.register_module("encoder", None)
        self._pending: dict | None = None

    @property
    def ready(self) -> bool:
        return self.encoder is not None

    @torch.no_grad()
    def follow(self, *modules: nn.Module) -> None:
        """One momentum update towards the encoder that `modules` make in sequence (a backbone
        and its projection head, say); the first call copies them."""
        # a compiled module copies and averages as the module it wraps
        online = [getattr(module, "_orig_mod", module) for module in modules]
        if self.encoder is None:
            # a fresh copy is its encoder, which the update leaves as it is; a copy given a
            # checkpoint's average moves on from it as the uninterrupted run's did
            self._copy(online)
        queries = itertools.chain.from_iterable(module.parameters() for module in online)
        for key, query in zip(self.encoder.parameters(), queries, strict=True):
            key.lerp_(query.detach().to(key.dtype), 1 - self.momentum)

    def _copy(self, online: list[nn.Module]) -> None:
        self.encoder = nn.Sequential(*(copy.deepcopy(module) for module in online))
        for parameter in self.encoder.parameters():
            parameter.requires_grad_(False)
        if self._pending is not None:
            self.encoder.load_state_dict(self._pending)
            self._pending = None

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:
            raise RuntimeError("the momentum encoder has no copy yet: call follow(...) first")
        return distributed.on_shuffled_shares(self.encoder, images)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if self.encoder is None:
            start = prefix + ENCODER
            saved = {key[len(start):]: value for key, value in state_dict.items() if key.startswith(start)}
            self._pending = saved or None


class FeatureQueue(nn.Module):
    """The last `size` features (rows) and their labels, oldest overwritten first.

    It starts as MoCo's does, and PaCo's code keeps it: random Gaussian features normalised
    along dim 0, and random labels (PaCo moco/builder.py L63-66). PaCo stores the queue as
    (K, dim) where MoCo stores (dim, K), but kept MoCo's dim=0: every one of the `dim` columns has
    unit norm, so a starting row has norm about sqrt(dim / K), not 1. Those rows leave the
    queue after its first K / batch steps.
    """

    def __init__(self, size: int, dim: int, num_classes: int):
        super().__init__()
        if size < 1 or dim < 1 or num_classes < 1:
            raise ValueError(f"size, dim and num_classes must be at least 1, got {size}, {dim}, {num_classes}")
        self.register_buffer("features", F.normalize(torch.randn(size, dim), dim=0))
        self.register_buffer("labels", torch.randint(0, num_classes, (size,)))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return len(self.labels)

    @torch.no_grad()
    def enqueue(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Write a batch of features over the oldest entries. Every rank writes every rank's
        batch, in rank order (MoCo's concat_all_gather), so the ranks' queues stay one queue. A
        batch larger than the queue leaves its last `size` rows."""
        features, labels = distributed.gather(features.detach()), distributed.gather(labels)
        if len(labels) > self.size:
            features, labels = features[-self.size:], labels[-self.size:]
        # the pointer stays on the device, so a step never waits to read it
        rows = (self.pointer + torch.arange(len(labels), device=self.labels.device)) % self.size
        self.features[rows] = features.to(self.features.dtype)
        self.labels[rows] = labels.to(self.labels.dtype)
        self.pointer.copy_((self.pointer + len(labels)) % self.size)
