"""`ltbench bench`: training throughput of ltbench's data path against the reference loop
that the original long-tailed codebases use (torchvision DataLoader + PIL transforms,
workers = cores), on the same model, data, method and batch size, in one process.

Both paths drive the same Trainer.train_step. The reference runs the model the way those
codebases do (fp32, NCHW, PyTorch's operators); ltbench runs its defaults (channels-last
everywhere, the fused batch norm + ReLU kernel on CPU, bf16 on CUDA), and each default is
also measured switched off, so the table separates what the data path gains from what the
memory layout, the kernel and the precision gain.
"""

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ltbench import bench_memory, bench_profile, environment, registry
from ltbench.errors import UserError
from ltbench.launch.local import make_trainer
from ltbench.method import Progress
from ltbench.store import atomic_write_bytes, csv_bytes
from ltbench.sweep import resolve
from ltbench.train import Trainer

COLUMNS = ["method", "path", "variant", "backbone", "batch_size", "steps", "images_per_s", "steps_per_s",
           "data_share", "peak_mem_mb", "device", "torch"]


@dataclass
class Measurement:
    method: str
    path: str  # ltbench | reference
    variant: str
    backbone: str
    batch_size: int
    steps: int
    images_per_s: float
    steps_per_s: float
    data_share: float  # fraction of step time spent producing the batch
    peak_mem_mb: float
    device: str
    torch: str = torch.__version__


def add_arguments(parser) -> None:
    parser.add_argument("--methods", default="ce", help="comma list (default ce)")
    parser.add_argument("--dataset", default="fashion_mnist_lt")
    parser.add_argument("--if", dest="imbalance_factor", type=float, default=100.0)
    parser.add_argument("--backbone", default="resnet32_cifar")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="timed (with --profile: profiled) steps per measurement")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="reference DataLoader workers")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-root")
    parser.add_argument("--out", help="CSV path (default results/bench/throughput.csv; "
                                      "profile.csv with --profile, feature_loss_memory.csv with --memory)")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    parser.add_argument("--memory", action="store_true",
                        help="measure the SC and PSC feature losses' peak memory and step time by batch size instead")
    parser.add_argument("--profile", action="store_true",
                        help="instead of throughput: where ltbench's step time goes, by kind of operation")
    bench_memory.add_arguments(parser)


def run(args) -> int:
    if args.memory and args.profile:
        raise UserError("--memory and --profile are two different measurements", hint="give one of them")
    if args.steps < 1 or args.warmup_steps < 0:
        raise UserError(f"--steps must be at least 1 and --warmup-steps at least 0, got {args.steps} and "
                        f"{args.warmup_steps}", hint="e.g. --steps 30 --warmup-steps 5")
    if args.memory:
        return bench_memory.run(args)
    if args.profile:
        return run_profile(args)
    return run_throughput(args)


def _specs_and_data(args):
    """(spec, dataset) for each listed method at the paper protocol with the chosen backbone
    and batch size."""
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        spec = resolve(method, args.dataset, args.imbalance_factor, 0, "paper",
                       {"backbone": args.backbone, "batch_size": args.batch_size})
        yield spec, registry.dataset(args.dataset).build(args.data_root, spec.imbalance_factor, spec.profile,
                                                         spec.n_max)


def run_profile(args) -> int:
    device = environment.resolve_device(args.device)
    rows = []
    for spec, data in _specs_and_data(args):
        trainer = make_trainer(spec, data, device, spec.params)
        rows += bench_profile.profile_method(trainer, batches_forever(trainer), spec, device, args.steps,
                                             args.warmup_steps)
    out = args.out or "results/bench/profile.csv"
    bench_profile.write(rows, out)
    bench_profile.show(rows, args.json, out)
    return 0


def run_throughput(args) -> int:
    from rich.table import Table

    from ltbench.progress import console

    device = environment.resolve_device(args.device)
    measurements = []
    for spec, data in _specs_and_data(args):
        for variant, params in variants(spec.params, device):
            measurements.append(measure_ltbench(spec, data, params, device, args, variant))
        measurements.append(measure_reference(spec, data, reference_params(spec.params), device, args))
    rows = [asdict(m) for m in measurements]
    out = args.out or "results/bench/throughput.csv"
    atomic_write_bytes(Path(out), csv_bytes(COLUMNS, rows))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title=f"Training throughput, {args.backbone}, batch {args.batch_size}, {environment.device_label(device)}")
    for col in ("method", "path", "variant", "img/s", "steps/s", "data share", "vs reference", "peak MB"):
        table.add_column(col, justify="right" if col not in ("method", "path", "variant") else "left")
    for m in measurements:
        ref = next(r for r in measurements if r.method == m.method and r.path == "reference")
        table.add_row(m.method, m.path, m.variant, f"{m.images_per_s:,.0f}", f"{m.steps_per_s:.2f}",
                      f"{100 * m.data_share:.0f} %", f"{m.images_per_s / ref.images_per_s:.2f}x",
                      f"{m.peak_mem_mb:,.0f}")
    console.print(table)
    console.print(f"written to {out}")
    return 0


def variants(params: dict, device: torch.device):
    """The default configuration and each speed option switched off and on, so the defaults
    are chosen from measurement (bf16 and torch.compile only on CUDA: this kind of CPU has no
    fast bf16, and compiling gave no gain on it)."""
    if device.type != "cuda":
        yield "channels_last+fused_bn_relu", {**params, "channels_last": True, "fused_bn_relu": True}
        yield "channels_last", {**params, "channels_last": True, "fused_bn_relu": False}
        yield "nchw", {**params, "channels_last": False, "fused_bn_relu": False}
        return
    yield "bf16+channels_last", {**params, "amp": True, "channels_last": True}
    yield "fp32", {**params, "amp": False, "channels_last": False}
    yield "bf16", {**params, "amp": True, "channels_last": False}
    yield "bf16+channels_last+compile", {**params, "amp": True, "channels_last": True, "compile": True}
    # CUDA graphs through torch.compile: replays each step's kernels without launch overhead,
    # which is most of the step time of a model as small as ResNet-32
    yield "bf16+channels_last+cuda_graphs", {**params, "amp": True, "channels_last": True,
                                             "compile": "reduce-overhead"}


def _timed_loop(trainer: Trainer, batches_iter, args, device) -> tuple[float, float, float]:
    """Runs warm-up then timed steps; returns (seconds, data seconds, model seconds)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    data_s = model_s = 0.0
    for step in range(args.warmup_steps + args.steps):
        if step == args.warmup_steps:
            environment.synchronize(device)
            data_s = model_s = 0.0
            start = time.perf_counter()
        t0 = time.perf_counter()
        batches = next(batches_iter)
        environment.synchronize(device)
        t1 = time.perf_counter()
        trainer.train_step(batches, Progress(0, trainer.epochs, step, args.warmup_steps + args.steps))
        environment.synchronize(device)
        data_s += t1 - t0
        model_s += time.perf_counter() - t1
    return time.perf_counter() - start, data_s, model_s


def _measurement(spec, path, variant, seconds, data_s, model_s, args, device) -> Measurement:
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else environment.peak_memory_mb(device)
    return Measurement(spec.method, path, variant, spec.backbone, spec.batch_size, args.steps,
                       args.steps * spec.batch_size / seconds, args.steps / seconds,
                       data_s / max(data_s + model_s, 1e-9), peak, environment.device_label(device))


def reference_params(params: dict) -> dict:
    """The original codebases: DataLoader + PIL, fp32, the default NCHW layout."""
    return {**params, "loader": "dataloader", "amp": False, "channels_last": False, "compile": False,
            "fused_bn_relu": False}


def measure_ltbench(spec, data, params, device, args, variant="default") -> Measurement:
    return _measure(make_trainer(spec, data, device, params), spec, "ltbench", variant, args, device)


def measure_reference(spec, data, params, device, args) -> Measurement:
    trainer = make_trainer(spec, data, device, params)
    trainer.loader.workers = args.workers  # a ReferenceLoader: workers change speed, not batches
    return _measure(trainer, spec, "reference", "fp32 nchw", args, device)


def batches_forever(trainer: Trainer):
    while True:
        yield from trainer.loader.epoch()


def _measure(trainer: Trainer, spec, path: str, variant: str, args, device) -> Measurement:
    seconds, data_s, model_s = _timed_loop(trainer, batches_forever(trainer), args, device)
    return _measurement(spec, path, variant, seconds, data_s, model_s, args, device)
