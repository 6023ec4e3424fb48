"""Data-parallel training through torch.distributed: one process per device, each training on
its share of every global batch, gradients averaged by DistributedDataParallel.

The launcher starts the processes (torchrun locally, or Slurm tasks through submitit) and
describes the group in the environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT,
LOCAL_RANK); `process_group` joins it. Everything here is the identity, or a no-op, in a
single process, so the trainer calls it unconditionally.
"""

import os
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

# A rank that fails leaves the others waiting in a collective; the launcher normally ends
# them, and this bounds the wait where it does not. Long enough for a slow first batch.
TIMEOUT = timedelta(minutes=20)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_world_size() -> int:
    """Processes on this node (they share its CPUs for data loading)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", world_size())) if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def rank_file(name: str) -> str:
    """A per-rank file name beside rank 0's: error.log, error.rank1.log, ..."""
    if rank() == 0:
        return name
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}.rank{rank()}.{suffix}" if dot else f"{name}.rank{rank()}"


# ----------------------------------------------------------------------------- the group


def requested_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@contextmanager
def process_group(device: str = "auto"):
    """Join the process group described by the environment for the duration of the block:
    NCCL on GPUs, gloo on CPU. A single process (WORLD_SIZE unset or 1) joins nothing."""
    if requested_world_size() <= 1 or dist.is_initialized():
        yield
        return
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        # submitit and torchrun leave every GPU of the node visible to every task
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- batches


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    """Global steps of an epoch. A last global batch too small to give every rank an image is
    dropped, since a rank with an empty batch cannot take a step."""
    steps, rest = divmod(n_images, batch_size)
    return steps + (rest >= world_size())


def share(start: int, stop: int) -> range:
    """This rank's positions of the global batch [start, stop): contiguous, as even as possible."""
    size, world, r = stop - start, world_size(), rank()
    base, extra = divmod(size, world)
    first = start + r * base + min(r, extra)
    return range(first, first + base + (r < extra))


# ----------------------------------------------------------------------------- collectives


def broadcast(obj):
    """Rank 0's `obj` on every rank (any picklable object)."""
    if not is_distributed():
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def _collective_device() -> torch.device:
    # NCCL only moves CUDA tensors
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (a new tensor on t's device)."""
    if not is_distributed():
        return t
    out = t.detach().to(_collective_device()).clone()
    dist.all_reduce(out)
    return out.to(t.device)


def mean(t: torch.Tensor) -> torch.Tensor:
    """Mean over ranks, e.g. of each rank's loss, for logging and for NaN checks that every
    rank takes the same way."""
    return all_sum(t.float()) / world_size() if is_distributed() else t


def sum_class_counts(counts):
    """Per-class correct/total counts summed over ranks (each evaluated its own shard)."""
    if not is_distributed():
        return counts
    summed = all_sum(torch.stack([torch.from_numpy(counts.correct), torch.from_numpy(counts.total)]))
    return type(counts)(summed[0].numpy(), summed[1].numpy())


def batch_mean(t: torch.Tensor) -> torch.Tensor:
    """The mean over dim 0 of every rank's rows together: the global batch's mean, as one device
    holding the whole batch takes it, whatever the ranks' shares. No gradient."""
    if not is_distributed():
        return t.detach().mean(0)
    sums = torch.cat([t.detach().sum(0).flatten(), t.new_full((1,), len(t))])
    summed = all_sum(sums)
    return (summed[:-1] / summed[-1]).view(t.shape[1:])


def anchor_mean(per_anchor: torch.Tensor) -> torch.Tensor:
    """The mean of a per-anchor loss over every rank's anchors, as one device takes it over the
    global batch: this rank's sum over all ranks' count, times W, since DDP divides the ranks'
    summed gradients by W. No anchor anywhere: 0."""
    count = all_sum(torch.tensor(float(len(per_anchor)), device=per_anchor.device)).clamp(min=1)
    return per_anchor.sum() * world_size() / count


def gather(t: torch.Tensor) -> torch.Tensor:
    """Every rank's `t` concatenated along dim 0 in rank order; ranks may hold different
    lengths. No gradient."""
    if not is_distributed():
        return t
    return _gather(t.detach(), _sizes(len(t)))


def gather_with_grad(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every rank's `t` concatenated in rank order, and the row where this rank's part starts.

    The gradient reaching the gathered tensor is summed over ranks and each rank keeps the
    slice of its own part: every rank's loss then trains every rank's embeddings, as one loss
    over the whole global batch on one device would. (DDP then averages the ranks' parameter
    gradients, so a loss computed on this rank's 1/W of the anchors is scaled by W; see
    methods/sc_hybrid.py.) In a single process: (t, 0).
    """
    if not is_distributed():
        return t, 0
    sizes = _sizes(len(t))
    return _GatherWithGrad.apply(t, sizes), sum(sizes[: rank()])


def _sizes(n: int) -> list[int]:
    sizes = torch.zeros(world_size(), dtype=torch.long, device=_collective_device())
    sizes[rank()] = n
    dist.all_reduce(sizes)
    return sizes.tolist()


def _gather(t: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    # all_gather wants equal shapes: pad every part to the longest, then trim
    local = t.to(_collective_device())
    padded = local.new_zeros((max(sizes), *local.shape[1:]))
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)]).to(t.device)


@torch.no_grad()
def on_shuffled_shares(fn, x: torch.Tensor) -> torch.Tensor:
    """fn(x), each rank computing it on as many rows of a random permutation of the global batch
    as it holds and getting its own rows' results back: MoCo's batch shuffle, so that a
    BatchNorm in `fn` sees a random share of the batch, not this rank's (moco/builder.py
    `_batch_shuffle_ddp`, `_batch_unshuffle_ddp`). `fn` maps rows to rows; no gradient. In one
    process fn(x), where a permutation would change nothing."""
    if not is_distributed():
        return fn(x)
    sizes = _sizes(len(x))
    everyone = _gather(x, sizes)
    # every rank draws, so the ranks' generators stay in step; rank 0's permutation is used
    order = torch.randperm(len(everyone)).to(_collective_device())
    dist.broadcast(order, src=0)
    order = order.to(x.device)
    start = sum(sizes[: rank()])
    results = _gather(fn(everyone[order[start : start + len(x)]]), sizes)
    restored = torch.empty_like(results)
    restored[order] = results  # row j of `results` is the result of everyone[order[j]]
    return restored[start : start + len(x)]


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t, sizes):
        ctx.start, ctx.length = sum(sizes[: rank()]), len(t)
        return _gather(t, sizes)

    @staticmethod
    def backward(ctx, grad):
        total = all_sum(grad.contiguous())
        return total[ctx.start : ctx.start + ctx.length], None


# ----------------------------------------------------------------------------- model


class _Step(nn.Module):
    """A method's loss of one step as a forward pass, so that DDP sees the backbone and the
    method's heads as one model and averages all their gradients."""

    def __init__(self, backbone: nn.Module, method: nn.Module):
        super().__init__()
        self.backbone, self.method = backbone, method

    def forward(self, batches, progress):
        return self.method.loss(self.backbone, batches, progress)


def data_parallel(backbone: nn.Module, method: nn.Module) -> nn.Module | None:
    """DDP over the backbone and the method for a distributed run; None otherwise (or when
    nothing trains, as in a post-hoc-only stage). Batches are on the device already, so
    device_ids stays None and DDP moves nothing."""
    step = _Step(backbone, method)
    if not is_distributed() or not any(p.requires_grad for p in step.parameters()):
        return None
    return DistributedDataParallel(step, device_ids=None)


def sync_buffers(*modules: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank. Each rank updates them
    from its own share of the batch; evaluation and the checkpoint must see one set, and
    rank 0's is the one the checkpoint keeps. A method's own statistics of the batch (TDE's
    average, PaCo's queue, TSC's centroids) are the global batch's on every rank already
    (`batch_mean`, `gather`), so this changes nothing of theirs."""
    if not is_distributed():
        return
    for module in modules:
        for buffer in module.buffers():
            if buffer.dtype != torch.bool:
                moved = buffer.data.to(_collective_device())
                dist.broadcast(moved, src=0)
                buffer.data.copy_(moved)
