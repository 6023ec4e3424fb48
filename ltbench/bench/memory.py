"""Peak memory and time per step of the hybrids' feature losses, SC against PSC, by batch size.

SC compares every embedding of a batch with every other one: its similarity matrix is
(2N)^2 for N images in two views. PSC compares each embedding with one prototype per class:
2N x C. Wang et al. (CVPR 2021) propose PSC for this reason; this measures it.

What is measured, per loss and batch size N: forward + backward of the loss alone on 2N
random L2-normalised embeddings of dimension 128 (two views of N images, labels drawn from
C classes), no backbone, no projection head. The loss is the registered method's own
`feature_loss` (sc_hybrid's, psc_hybrid's, with PSC's C learnable prototypes), built with
its paper hyperparameters for CIFAR-100-LT.

- peak_mem_mb: the high-water mark of memory held by torch's allocator during that step,
  above what was held before it (the embeddings themselves are not counted; their gradient
  is). On CUDA, torch.cuda.max_memory_allocated. On CPU, the allocator has no peak counter,
  so the step runs once under torch.profiler(profile_memory=True) and the peak is taken over
  the running sum of its allocation and free records in time order. Either way it counts
  tensors, not the process's resident size, so it does not depend on what else the process
  has loaded. (Checked on CPU against the peak resident-size growth of a fresh process with
  glibc's mmap threshold lowered: SC at batch 1024 and 2048, 84.0 vs 84.4 MB and 336.0 vs
  336.5 MB.)
- step_ms: median wall time of un-profiled steps after one warm-up step (synchronised on
  CUDA). On a shared CPU this moves with the machine's load; the memory does not.

BCL (Zhu et al., CVPR 2022; `--losses bcl`) contrasts each embedding with the batch and with C
prototypes, the classifier's C weight vectors through an MLP head: a 2N x (2N + C) matrix, and
the head's forward and backward over C rows, both inside the measured step.

PaCo (Cui et al., ICCV 2021; `--losses paco`) contrasts each of the N queries with the 2N
queries and keys, its queue of K earlier keys and its C class centres: N x (2N + K + C), its
cost growing with the classes as PSC's does, plus a queue of fixed size. The first N
embeddings are its queries, the next N its keys (no gradient); the centres score the queries,
the method being built on 128-d features here.

Run as `ltbench bench --memory` (or `python benchmarks/feature_loss_memory.py`), or call
`measure()` and `write()` from Python.
"""

import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ltbench import environment
from ltbench.bench import BATCH_SIZES, DEFAULT_LOSSES, FEATURE_LOSSES as LOSSES
from ltbench.bench.inputs import method_instance
from ltbench.errors import UserError
from ltbench.store import atomic_write_bytes, csv_bytes

COLUMNS = ["loss", "batch_size", "peak_mem_mb", "step_ms", "device"]
# whose paper hyperparameters the losses take (PSC's temperature is set per dataset); the
# temperature changes no cost, and CIFAR-100 has --classes' default number of classes
HP_DATASET = "cifar100_lt"
EMBEDDING_DIM = 128
VIEWS = 2


def feature_loss_step(loss: str, batch_size: int, num_classes: int, device: torch.device, seed: int = 0):
    """A closure running one forward + backward of the named loss, on fixed random inputs."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {tuple(LOSSES)}, got {loss!r}")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # a method's parameters (PSC's prototypes) draw from the global RNG
        torch.manual_seed(seed)
        method = method_instance(LOSSES[loss], HP_DATASET, [1] * num_classes, EMBEDDING_DIM,
                                 {"projection_dim": EMBEDDING_DIM}).to(device)
    embeddings = F.normalize(torch.randn(VIEWS * batch_size, EMBEDDING_DIM, generator=gen), dim=1).to(device)
    embeddings.requires_grad_()
    labels = torch.randint(0, num_classes, (batch_size,), generator=gen).repeat(VIEWS).to(device)

    def step():
        embeddings.grad = None
        method.zero_grad(set_to_none=True)
        method.feature_loss(embeddings, labels).backward()

    return step


def peak_memory_mb(step, device: torch.device) -> float:
    if device.type == "cuda":
        environment.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        environment.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with environment.native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # the raw allocator records (+bytes allocated, -bytes freed); the profiler's own
    # FunctionEvents fold them into per-op totals, which hide peaks inside an op
    records = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                     key=lambda e: e.start_ns())
    live = peak = 0
    for record in records:
        live += record.nbytes()
        peak = max(peak, live)
    return peak / 2**20


def step_ms(step, device: torch.device, min_seconds: float = 0.5, max_repeats: int = 20) -> float:
    step()
    environment.synchronize(device)
    times = []
    while len(times) < 3 or (sum(times) < min_seconds and len(times) < max_repeats):
        start = time.perf_counter()
        step()
        environment.synchronize(device)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(batch_sizes=BATCH_SIZES, losses=DEFAULT_LOSSES, num_classes: int = 100, device="cpu", log=print) -> list[dict]:
    """One row per (loss, batch size) with the COLUMNS of the CSV."""
    device = environment.resolve_device(device) if isinstance(device, str) else device
    label = environment.device_label(device)
    rows = []
    for batch_size in batch_sizes:
        for loss in losses:
            step = feature_loss_step(loss, batch_size, num_classes, device)
            row = {"loss": loss, "batch_size": batch_size, "peak_mem_mb": round(peak_memory_mb(step, device), 3),
                   "step_ms": round(step_ms(step, device), 3), "device": label}
            log(f"{loss:>3}  batch {batch_size:>5}  peak {row['peak_mem_mb']:>10.2f} MB  step {row['step_ms']:>9.2f} ms")
            rows.append(row)
            del step
    return rows


def write(rows: list[dict], csv_path="results/bench/feature_loss_memory.csv", plot_path="reports/feature_loss_memory.png",
          num_classes: int | None = None) -> None:
    atomic_write_bytes(Path(csv_path), csv_bytes(COLUMNS, rows))
    if plot_path:
        plot(rows, Path(plot_path), num_classes)


def plot(rows: list[dict], path: Path, num_classes: int | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6), constrained_layout=True)
    for loss, name in (("sc", "SC (batch x batch)"), ("psc", "PSC (batch x classes)"),
                       ("bcl", "BCL (batch x (batch + classes))"),
                       ("paco", "PaCo (batch x (batch + queue + classes))"), ("kcl", "KCL (batch x batch)"),
                       ("tsc", "TSC (batch x (batch + classes))")):
        mine = sorted((r for r in rows if r["loss"] == loss), key=lambda r: r["batch_size"])
        if not mine:
            continue
        sizes = [r["batch_size"] for r in mine]
        axes[0].plot(sizes, [r["peak_mem_mb"] for r in mine], marker="o", label=name)
        axes[1].plot(sizes, [r["step_ms"] for r in mine], marker="o", label=name)
    sizes = sorted({r["batch_size"] for r in rows})
    for ax, ylabel in zip(axes, ("Peak memory above inputs (MB)", "Forward + backward (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("Batch size (images; two views each)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(frameon=False)
    classes = f", {num_classes} classes" if num_classes else ""
    fig.suptitle(f"Feature-loss cost, {EMBEDDING_DIM}-d embeddings{classes}, {rows[0]['device']}", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def run(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        raise UserError(f"--batch-sizes must be a comma list of integers, got '{args.batch_sizes}'",
                        hint="e.g. --batch-sizes 128,256,512") from None
    if not batch_sizes or min(batch_sizes) < 1 or args.classes < 2:
        raise UserError("--batch-sizes must list positive sizes and --classes be at least 2",
                        hint="e.g. --batch-sizes 128,1024 --classes 100")
    losses = [loss.strip() for loss in args.losses.split(",") if loss.strip()]
    if not losses or set(losses) - set(LOSSES):
        raise UserError(f"--losses must be a comma list of {', '.join(LOSSES)}, got '{args.losses}'",
                        hint="e.g. --losses psc,bcl")
    out = args.out or "results/bench/feature_loss_memory.csv"
    rows = measure(batch_sizes, losses, num_classes=args.classes, device=args.device,
                   log=(lambda *_: None) if args.json else print)
    write(rows, out, args.plot, args.classes)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"written to {out}" + (f" and {args.plot}" if args.plot else ""))
    return 0
