"""`ltbench bench`: training throughput of ltbench's data path against the reference loop
that the original long-tailed codebases use (torchvision DataLoader + PIL transforms,
workers = cores), on the same model, data, method and batch size, in one process.

Both paths drive the same Trainer.train_step. The reference runs the model the way those
codebases do (fp32, NCHW); ltbench runs its defaults (channels-last everywhere, bf16 on
CUDA), and each default is also measured switched off, so the table separates what the
data path gains from what the memory layout and the precision gain. Both run PyTorch's
own operators.
"""

import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ltbench import environment
from ltbench.bench import memory as bench_memory
from ltbench.bench.inputs import batches_forever, specs_and_data, timed_trainer
from ltbench.method import Progress
from ltbench.spec import RunSpec
from ltbench.store import atomic_write_bytes, csv_bytes
from ltbench.train import Trainer

COLUMNS = ["method", "path", "variant", "backbone", "batch_size", "steps", "rounds", "images_per_s", "steps_per_s",
           "vs_reference", "vs_reference_min", "vs_reference_max", "data_share", "step_peak_mb", "device", "torch"]


@dataclass
class Measurement:
    method: str
    path: str  # ltbench | reference
    variant: str
    backbone: str
    batch_size: int
    steps: int  # timed steps per round
    rounds: int
    images_per_s: float  # median over rounds
    steps_per_s: float
    vs_reference: float  # median over rounds of images/s over the reference's in the same round
    vs_reference_min: float  # the lowest and highest of those ratios: how much the machine moved
    vs_reference_max: float
    data_share: float  # fraction of step time spent producing the batch
    step_peak_mb: float  # the most tensor memory one training step holds above what it started with
    device: str
    torch: str = torch.__version__


def run(args) -> int:
    from rich.table import Table

    from ltbench.progress import console

    device = environment.resolve_device(args.device)
    measurements = []
    for spec, data in specs_and_data(args):
        cases = [Case(spec, "ltbench", variant, timed_trainer(spec, data, device, params))
                 for variant, params in variants(spec.trainer_params, device)]
        reference = timed_trainer(spec, data, device, reference_params(spec.trainer_params))
        reference.loader.workers = args.workers  # a ReferenceLoader: workers change speed, not batches
        cases.append(Case(spec, "reference", "fp32 nchw", reference))
        measurements += measure(cases, args, device)
    rows = [asdict(m) for m in measurements]
    out = args.out or "results/bench/throughput.csv"
    atomic_write_bytes(Path(out), csv_bytes(COLUMNS, rows))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title=f"Training throughput, {args.backbone}, batch {args.batch_size}, "
                        f"{environment.device_label(device)}, median of {args.rounds} rounds")
    for col in ("method", "path", "variant", "img/s", "steps/s", "data share", "vs reference (range)", "step peak MB"):
        table.add_column(col, justify="right" if col not in ("method", "path", "variant") else "left")
    for m in measurements:
        table.add_row(m.method, m.path, m.variant, f"{m.images_per_s:,.0f}", f"{m.steps_per_s:.2f}",
                      f"{100 * m.data_share:.0f} %",
                      f"{m.vs_reference:.2f}x ({m.vs_reference_min:.2f}-{m.vs_reference_max:.2f})",
                      f"{m.step_peak_mb:,.0f}")
    console.print(table)
    console.print(f"written to {out}")
    return 0


def variants(params: dict, device: torch.device):
    """The default configuration and each speed option switched off and on, so the defaults
    are chosen from measurement (torch.compile only on CUDA: compiling made CPU steps slower)."""
    if device.type != "cuda":
        yield "channels_last", {**params, "channels_last": True}
        yield "nchw", {**params, "channels_last": False}
        # opt-in (--set cpu_amp=true), measured so its gain on this CPU is known
        yield "bf16+channels_last", {**params, "channels_last": True, "cpu_amp": True}
        return
    yield "bf16+channels_last", {**params, "amp": True, "channels_last": True}
    yield "fp32", {**params, "amp": False, "channels_last": False}
    yield "bf16", {**params, "amp": True, "channels_last": False}
    yield "bf16+channels_last+compile", {**params, "amp": True, "channels_last": True, "compile": True}
    # CUDA graphs through torch.compile: replays each step's kernels without launch overhead,
    # which is most of the step time of a model as small as ResNet-32
    yield "bf16+channels_last+cuda_graphs", {**params, "amp": True, "channels_last": True,
                                             "compile": "reduce-overhead"}


@dataclass
class Case:
    """One configuration to time: a trainer, and the endless stream of its batches."""

    spec: RunSpec
    path: str
    variant: str
    trainer: Trainer

    def __post_init__(self):
        self.batches = batches_forever(self.trainer)
        # every step as if at the start of training: a step's cost does not depend on when it runs
        self.progress = Progress(0, self.trainer.epochs, 0, 1)

    def train_steps(self, steps: int, device) -> tuple[float, float]:
        """Runs `steps` steps; returns (data seconds, model seconds)."""
        data_s = model_s = 0.0
        for _ in range(steps):
            t0 = time.perf_counter()
            batches = next(self.batches)
            environment.synchronize(device)
            t1 = time.perf_counter()
            self.trainer.train_step(batches, self.progress)
            environment.synchronize(device)
            data_s += t1 - t0
            model_s += time.perf_counter() - t1
        return data_s, model_s

    def step_peak_mb(self, device) -> float:
        batches = next(self.batches)  # drawn first: the step's own memory is what is measured
        return bench_memory.peak_memory_mb(
            lambda: self.trainer.train_step(batches, self.progress), device)


def measure(cases: list[Case], args, device) -> list[Measurement]:
    """Warms every case up, then times them in turn, round after round, so that a change in
    the machine's speed (other tenants, frequency scaling) falls on all of them alike rather
    than on whichever ran last. The last case is the reference each round's ratio is taken to.
    A reference DataLoader's workers fill their prefetch queue while the other cases run,
    which, if anything, favours the reference."""
    for case in cases:
        case.train_steps(args.warmup_steps, device)
    timings = [[] for _ in cases]  # per case, per round: (seconds, data seconds, model seconds)
    for _ in range(args.rounds):
        for case, rounds in zip(cases, timings):
            environment.synchronize(device)
            start = time.perf_counter()
            data_s, model_s = case.train_steps(args.steps, device)
            rounds.append((time.perf_counter() - start, data_s, model_s))
    reference = timings[-1]
    results = []
    for case, rounds in zip(cases, timings):
        seconds = [t for t, _, _ in rounds]
        ratios = [ref_t / t for t, (ref_t, _, _) in zip(seconds, reference)]
        data_s, model_s = sum(d for _, d, _ in rounds), sum(m for _, _, m in rounds)
        median_s = statistics.median(seconds)
        results.append(Measurement(
            case.spec.method, case.path, case.variant, case.spec.backbone, case.spec.batch_size, args.steps,
            args.rounds, args.steps * case.spec.batch_size / median_s, args.steps / median_s,
            statistics.median(ratios), min(ratios), max(ratios), data_s / max(data_s + model_s, 1e-9),
            case.step_peak_mb(device),
            environment.device_label(device)))
    return results


def reference_params(params: dict) -> dict:
    """The original codebases: DataLoader + PIL, fp32, the default NCHW layout."""
    return {**params, "loader": "dataloader", "amp": False, "cpu_amp": False, "channels_last": False,
            "compile": False}

