"""Time the kernels a CIFAR ResNet step is made of, one at a time, on warm inputs.

    python benchmarks/resnet_kernels.py [--device cpu|cuda] [--repeats 20] [--no-compile]

For each stage of ResNet-32 at batch 128 (16 channels at 32x32, 32 at 16x16, 64 at 8x8):
a 3x3 convolution's forward, its input-gradient and weight-gradient, in channels-last and
NCHW, with GFLOP/s; and a BatchNorm+ReLU block's forward+backward (with and without the
residual add) eager, through ltbench's fused CPU kernel, and under torch.compile. Beside `ltbench bench --profile`, which shows the same kernels inside a real
training step, this separates what the kernels cost from what the step's memory traffic
adds, and checks whether compiling would fuse the memory-bound part into something faster.
"""

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from ltbench import environment
from ltbench.kernels.bn_relu import batch_norm_relu

BATCH = 128
STAGES = ((16, 32), (32, 16), (64, 8))  # (channels, height = width)


def milliseconds(fn, device, repeats: int) -> float:
    for _ in range(3):
        fn()
    environment.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    environment.synchronize(device)
    return (time.perf_counter() - start) / repeats * 1000


def convolutions(device, repeats: int) -> None:
    print("3x3 convolution, batch 128: ms (GFLOP/s)")
    for channels, size in STAGES:
        flops = 2 * BATCH * channels * channels * 9 * size * size
        for layout in (torch.channels_last, torch.contiguous_format):
            x = torch.randn(BATCH, channels, size, size, device=device).contiguous(memory_format=layout)
            w = torch.randn(channels, channels, 3, 3, device=device).contiguous(memory_format=layout)
            grad = torch.randn_like(x)

            def backward(mask):
                return lambda: torch.ops.aten.convolution_backward(
                    grad, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)

            times = {"forward": milliseconds(lambda: F.conv2d(x, w, padding=1), device, repeats),
                     "input grad": milliseconds(backward([True, False, False]), device, repeats),
                     "weight grad": milliseconds(backward([False, True, False]), device, repeats)}
            name = "channels-last" if layout is torch.channels_last else "NCHW"
            cells = ", ".join(f"{k} {ms:.2f} ({flops / ms / 1e6:.0f})" for k, ms in times.items())
            print(f"  {channels:>2} ch {size:>2}x{size:<2} {name:<13} {cells}")


class BatchNormReLU(nn.Module):
    """relu(bn(x) [+ residual]) as the CIFAR ResNets compute it, fused or not."""

    def __init__(self, channels: int, fused: bool):
        super().__init__()
        self.bn, self.fused = nn.BatchNorm2d(channels), fused

    def forward(self, x, residual=None):
        return batch_norm_relu(x, self.bn, residual, fused=self.fused)


def batch_norm_relu_blocks(device, repeats: int, compile_too: bool) -> None:
    print("BatchNorm+ReLU, then BatchNorm+add+ReLU, forward+backward, batch 128, channels-last: ms")
    for channels, size in STAGES:
        x = torch.randn(BATCH, channels, size, size, device=device).contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        residual, grad = torch.randn_like(x), torch.randn_like(x)
        runs = {"eager": BatchNormReLU(channels, fused=False).to(device)}
        if device.type == "cpu":  # ltbench's kernel is CPU-only
            runs["fused"] = BatchNormReLU(channels, fused=True)
        if compile_too:
            runs["compiled"] = torch.compile(BatchNormReLU(channels, fused=False).to(device))
        for r in (None, residual):
            cells = ", ".join(f"{name} {milliseconds(lambda f=f: f(x, r).backward(grad), device, repeats):.2f}"
                              for name, f in runs.items())
            print(f"  {channels:>2} ch {size:>2}x{size:<2} {'+add' if r is not None else '    '} {cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile timings")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    convolutions(device, args.repeats)
    batch_norm_relu_blocks(device, args.repeats, not args.no_compile)


if __name__ == "__main__":
    main()
