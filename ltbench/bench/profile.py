"""`ltbench bench --profiler`: where a training step's time goes, and how close the model's
convolutions come to what this device's convolution kernels can do.

For each method, ltbench's default path (the configuration `ltbench run` uses) runs a few
warm-up steps, then a few steps under torch.profiler. Every operator's self time is put in
one of a few kinds (convolution forward and backward, batch norm, activation, ...); on CPU
that is host time, on CUDA the time of the kernels each operator launched. What no operator
accounts for is shown as its own row: Python and autograd bookkeeping on CPU, the GPU
waiting for work on CUDA (launch overhead, which CUDA graphs remove).

The convolution row also gets a rate: the forward convolutions' FLOPs (counted by the
profiler from their shapes) over their time, next to the rate of one large convolution (3x3,
256 channels, 16x16, batch 64) run the same way on the same device. A ratio near 1 says
the kernels are already as fast as they get here and a faster step must come from doing
less or fusing the rest; a low one says the layers are too small to keep the device busy.

Batch production is not profiled here: the throughput table (`ltbench bench`) gives its
share of the step.
"""

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from ltbench import environment
from ltbench.bench import memory as bench_memory
from ltbench.bench.inputs import batches_forever, specs_and_data, timed_trainer
from ltbench.method import Progress
from ltbench.store import atomic_write_bytes, csv_bytes

COLUMNS = ["method", "backbone", "batch_size", "category", "ms_per_step", "share",
           "conv_forward_gflops", "conv_ceiling_gflops", "device", "torch"]

# first match wins: an operator's name (without "aten::") containing any of these words
CATEGORIES = (
    ("convolution backward", ("convolution_backward",)),
    ("convolution forward", ("convolution",)),
    ("batch norm", ("batch_norm", "batchnorm")),  # also autograd's nodes, e.g. NativeBatchNormBackward0
    ("activation", ("relu", "threshold", "clamp_min", "gelu", "silu", "sigmoid")),
    ("matrix multiply", ("addmm", "bmm", "mm", "linear")),
    ("loss", ("softmax", "nll_loss", "cross_entropy", "logsumexp")),
    ("optimiser", ("_foreach_", "optimizer")),
)
OTHER = "other operators"
OUTSIDE = "outside operators"


def category(op_name: str) -> str:
    name = op_name.lower().removeprefix("aten::")
    for label, words in CATEGORIES:
        if any(word in name for word in words):
            return label
    return OTHER


def run(args) -> int:
    device = environment.resolve_device(args.device)
    rows = []
    for spec, data in specs_and_data(args):
        trainer = timed_trainer(spec, data, device, spec.trainer_params)
        rows += profile_method(trainer, batches_forever(trainer), spec, device, args.steps, args.warmup_steps)
    out = args.out or "results/bench/profile.csv"
    write(rows, out)
    show(rows, args.json, out)
    return 0


def profile_method(trainer, batches, spec, device: torch.device, steps: int, warmup_steps: int) -> list[dict]:
    """One row per category for this trainer's step, in the order of CATEGORIES; `batches`
    iterates over the trainer's batches without end."""
    cuda = device.type == "cuda"
    total = warmup_steps + steps
    for step in range(warmup_steps):
        trainer.train_step(next(batches), Progress(0, trainer.epochs, step, total))
    # draw the profiled steps' batches first, so that only model steps are profiled
    profiled = [next(batches) for _ in range(steps + 1)]
    environment.synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with environment.native_stderr_silenced(), profile(activities=activities) as prof:
        start = time.perf_counter()
        for i, step_batches in enumerate(profiled[:steps]):
            trainer.train_step(step_batches, Progress(0, trainer.epochs, warmup_steps + i, total))
        environment.synchronize(device)
        wall_ms = (time.perf_counter() - start) * 1000 / steps
    # FLOP counting records every operator's shapes, which made a CPU step 3x slower here
    # (batch norm 4-5x): the convolutions' FLOPs come from one more step, profiled apart
    with environment.native_stderr_silenced(), profile(activities=activities, with_flops=True) as flops_prof:
        trainer.train_step(profiled[steps], Progress(0, trainer.epochs, warmup_steps + steps, total + 1))
        environment.synchronize(device)
    conv_flops_per_step = sum(e.flops or 0 for e in flops_prof.events() if e.name == "aten::conv2d")

    per_category = {label: 0.0 for label, _ in CATEGORIES} | {OTHER: 0.0}
    for event in prof.events():
        if event.device_type != DeviceType.CPU:
            continue  # kernels are counted through the operator that launched them
        ms = (event.self_device_time_total if cuda else event.self_cpu_time_total) / 1000 / steps
        per_category[category(event.name)] += ms
    per_category[OUTSIDE] = max(wall_ms - sum(per_category.values()), 0.0)

    conv_ms = per_category["convolution forward"]
    conv_gflops = conv_flops_per_step / (conv_ms / 1000) / 1e9 if conv_ms and conv_flops_per_step else 0.0
    ceiling = conv_ceiling_gflops(trainer, device)
    return [{"method": spec.method, "backbone": spec.backbone, "batch_size": spec.batch_size,
             "category": label, "ms_per_step": ms, "share": ms / wall_ms,
             "conv_forward_gflops": conv_gflops, "conv_ceiling_gflops": ceiling,
             "device": environment.device_label(device), "torch": torch.__version__}
            for label, ms in per_category.items()]


def conv_ceiling_gflops(trainer, device: torch.device) -> float:
    """GFLOP/s of one large 3x3 convolution in the trainer's layout and precision: what this
    device's convolution kernels reach when the layer is big enough to keep them busy."""
    batch, channels, size = 64, 256, 16
    layout = torch.channels_last if trainer.params["channels_last"] else torch.contiguous_format
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, size, size, generator=gen).to(device).contiguous(memory_format=layout)
    w = torch.randn(channels, channels, 3, 3, generator=gen).to(device).contiguous(memory_format=layout)
    with torch.no_grad(), trainer.autocast():
        ms = bench_memory.step_ms(lambda: F.conv2d(x, w, padding=1), device)
    return 2 * batch * channels * channels * 9 * size * size / ms / 1e6


def write(rows: list[dict], out: str) -> None:
    atomic_write_bytes(Path(out), csv_bytes(COLUMNS, rows))


def show(rows: list[dict], as_json: bool, out: str) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    from ltbench.progress import console

    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        first = mine[0]
        table = Table(title=f"Where a step goes: {method}, {first['backbone']}, batch {first['batch_size']}, "
                            f"{first['device']}")
        for col in ("kind of work", "ms / step", "share"):
            table.add_column(col, justify="left" if col == "kind of work" else "right")
        for r in sorted(mine, key=lambda r: -r["ms_per_step"]):
            table.add_row(r["category"], f"{r['ms_per_step']:.1f}", f"{100 * r['share']:.0f} %")
        console.print(table)
        if first["conv_forward_gflops"]:
            console.print(f"forward convolutions: {first['conv_forward_gflops']:.0f} GFLOP/s; one large "
                          f"convolution on this device: {first['conv_ceiling_gflops']:.0f} GFLOP/s "
                          f"({100 * first['conv_forward_gflops'] / first['conv_ceiling_gflops']:.0f} %)")
    console.print(f"written to {out}")
