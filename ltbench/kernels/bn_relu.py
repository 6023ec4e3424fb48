"""Batch norm (training mode) + ReLU, with an optional residual added before the ReLU, as
one compiled CPU kernel (bn_relu.c) for the CIFAR ResNets.

`batch_norm_relu(x, bn, residual, fused=True)` computes exactly what
`relu(bn(x) [+ residual])` computes, up to float rounding, and updates `bn`'s running
statistics the same way. It uses the kernel only where the kernel applies (CPU, float32,
channels-last, a training-mode BatchNorm with affine parameters and running statistics,
not under torch.compile) and PyTorch's operators everywhere else.
"""

import ctypes
import warnings
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from ltbench.kernels import native

_P, _L, _D = ctypes.c_void_p, ctypes.c_long, ctypes.c_double


@cache  # built and loaded once per process
def _library() -> native.Loaded:
    loaded = native.build("bn_relu")
    if loaded.library is not None:
        loaded.library.ltb_bn_relu_forward.argtypes = [_P, _P, _L, _L, _P, _P, _D, _P, _P]
        loaded.library.ltb_bn_relu_backward.argtypes = [_P, _P, _P, _L, _L, _P, _P, _P, _P, _P]
    return loaded


def available() -> tuple[bool, str]:
    """Whether the kernel compiled and loaded here; if not, why."""
    loaded = _library()
    return loaded.library is not None, loaded.reason


def _ptr(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()


def _check(status: int) -> None:
    if status != 0:
        raise MemoryError("bn_relu kernel: out of memory for its per-thread sums")


class _BatchNormReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, residual, eps):
        lib = _library().library
        n, c, h, w = x.shape
        rows = n * h * w
        y = torch.empty_like(x, memory_format=torch.channels_last)
        # mean, invstd, unbiased variance, scale, shift: one row each
        stats = torch.empty(5, c, dtype=torch.float32)
        # named like PyTorch's operator, so `ltbench bench --profile` counts it as batch norm
        with record_function("ltbench::batch_norm_relu"):
            _check(lib.ltb_bn_relu_forward(_ptr(x), _ptr(residual), rows, c, _ptr(weight), _ptr(bias), eps,
                                           _ptr(y), _ptr(stats)))
        ctx.mark_non_differentiable(stats)
        ctx.has_residual = residual is not None
        # with a residual the ReLU's mask cannot be recomputed from x alone, so it is read from y
        ctx.save_for_backward(x, weight, stats, y if ctx.has_residual else None)
        return y, stats

    @staticmethod
    def backward(ctx, dy, _dstats):
        lib = _library().library
        x, weight, stats, y = ctx.saved_tensors
        dy = dy.contiguous(memory_format=torch.channels_last)
        n, c, h, w = x.shape
        dx = torch.empty_like(x, memory_format=torch.channels_last)
        dz = torch.empty_like(x, memory_format=torch.channels_last) if ctx.has_residual else None
        grads = torch.empty(2, c, dtype=torch.float32)
        with record_function("ltbench::batch_norm_relu_backward"):
            _check(lib.ltb_bn_relu_backward(_ptr(dy), _ptr(x), _ptr(y), n * h * w, c, _ptr(weight), _ptr(stats),
                                            _ptr(dz), _ptr(dx), _ptr(grads)))
        return dx, grads[0], grads[1], dz if ctx.needs_input_grad[3] else None, None


def fusable(x: torch.Tensor, bn: nn.BatchNorm2d, residual: torch.Tensor | None) -> bool:
    def cpu_channels_last(t):
        return t.device.type == "cpu" and t.dtype == torch.float32 and t.dim() == 4 \
            and t.is_contiguous(memory_format=torch.channels_last)

    return (bn.training and bn.affine and bn.track_running_stats and bn.weight.dtype == torch.float32
            and cpu_channels_last(x) and x.shape[0] * x.shape[2] * x.shape[3] > 1
            and (residual is None or (residual.shape == x.shape and cpu_channels_last(residual)))
            and not torch.compiler.is_compiling()
            and available()[0])


def _update_running_stats(bn: nn.BatchNorm2d, stats: torch.Tensor) -> None:
    """What nn.BatchNorm2d does in training: count the batch, then an exponential (or, with
    momentum None, cumulative) average of the batch mean and unbiased variance."""
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / bn.num_batches_tracked.item() if bn.momentum is None else bn.momentum
        bn.running_mean.lerp_(stats[0], factor)
        bn.running_var.lerp_(stats[2], factor)


def batch_norm_relu(x: torch.Tensor, bn: nn.BatchNorm2d, residual: torch.Tensor | None = None,
                    fused: bool = False) -> torch.Tensor:
    """relu(bn(x) + residual), through the compiled kernel when `fused` and it applies."""
    if fused and fusable(x, bn, residual):
        y, stats = _BatchNormReLU.apply(x, bn.weight, bn.bias, residual, bn.eps)
        _update_running_stats(bn, stats)
        return y
    out = bn(x)
    if residual is not None:
        out += residual
    return F.relu(out, inplace=True)


def warn_if_unavailable() -> bool:
    """Whether the kernel is usable; warns once with the reason when it is not."""
    ok, reason = available()
    if not ok:
        warnings.warn(f"fused batch norm + ReLU kernel unavailable, using PyTorch's operators: {reason}",
                      stacklevel=2)
    return ok
