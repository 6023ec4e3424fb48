"""The shared training loop: epochs, learning-rate schedule, AMP, checkpoints, evaluation.

Methods plug in through `ltbench.method.Method`; this module knows nothing about files
beyond the checkpoint callbacks it is given, and nothing about launchers.
"""

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ltbench import distributed
from ltbench.data.datasets import LongTailData
from ltbench.data.pipeline import eval_batches, make_loader
from ltbench.method import Method, Progress
from ltbench.metrics import ClassCounts


class NonFiniteLoss(RuntimeError):
    pass


def learning_rate(epoch: int, epochs: int, p: dict) -> float:
    """Learning rate for a 0-based epoch, set once at the start of the epoch (as LDAM-DRW does).
    With `lr_step_first` (decoupling's stage 2, whose code steps its scheduler before each
    epoch's steps) epoch e trains at the lr the schedule gives epoch e + 1: a cosine's last
    epoch at 0."""
    warmup = p["warmup_epochs"]
    if epoch < warmup:
        return p["lr"] * (epoch + 1) / warmup
    if p.get("lr_step_first", False):
        epoch += 1
    if p["schedule"] == "cosine":
        return p["lr"] * 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / max(epochs - warmup, 1)))
    factor = 1.0
    for milestone, f in zip(p["milestones"], p["lr_factors"]):
        if epoch >= round(milestone * epochs):
            factor = f
    return p["lr"] * factor


class Reporter:
    """Progress callbacks; the default reports nothing."""

    def start(self, label: str, epochs: int, steps: int, start_epoch: int) -> None: ...
    def step(self, epoch: int, step: int, loss: float, images_per_s: float) -> None: ...
    def epoch_end(self, epoch: int, top1: float | None) -> None: ...
    def finish(self) -> None: ...


@dataclass
class TrainOutcome:
    final: ClassCounts
    best_top1: float
    best_epoch: int
    train_seconds: float  # this process's training time plus the time recorded before any resume
    images_seen: int
    loss_history: list[float] = field(default_factory=list)  # mean loss per epoch
    calibration: dict = field(default_factory=dict)  # what Method.calibrate chose, e.g. {"tau": 0.9}


@dataclass
class Trainer:
    data: LongTailData
    backbone: nn.Module
    method: Method
    params: dict
    epochs: int
    batch_size: int
    seed: int
    device: torch.device
    save_checkpoint: callable = None  # state dict -> None
    reporter: Reporter = field(default_factory=Reporter)
    label: str = ""
    step_hook: callable = None  # (epoch, step, loss tensor) -> None; used by tests to watch the loss

    def __post_init__(self):
        p = self.params
        self.cuda = self.device.type == "cuda"
        self.backbone.to(self.device)
        self.method.to(self.device)
        if p["channels_last"]:
            self.backbone.to(memory_format=torch.channels_last)
        modules = nn.ModuleList([self.backbone, self.method])
        # parameters the method trains without weight decay (CB-focal's bias) get a group of
        # their own; without any, one group, as checkpoints of earlier versions hold
        plain = self.method.no_weight_decay()
        groups = [{"params": [*self.backbone.parameters(),
                              *(t for n, t in self.method.named_parameters() if n not in plain)]}]
        if plain:
            groups.append({"params": [t for n, t in self.method.named_parameters() if n in plain], "weight_decay": 0.0})
        self.optimizer = torch.optim.SGD(groups if plain else modules.parameters(), lr=p["lr"],
                                         momentum=p["momentum"], weight_decay=p["weight_decay"])
        # the dataset's kind chooses the loader (on-device arrays or image files); in a
        # distributed run it loads this rank's share of every batch
        self.loader = make_loader(self.data, self.method.draws, self.batch_size, self.device, self.seed, p)
        self.data_parallel = distributed.data_parallel(self.backbone, self.method)
        self.start_epoch, self.best_top1, self.best_epoch = 0, -1.0, -1
        self.seconds_before, self.images_before, self.loss_history = 0.0, 0, []

    def autocast(self):
        if self.cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.params["amp"])
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.params["cpu_amp"])

    def _to_device_layout(self, x):
        return x.contiguous(memory_format=torch.channels_last) if self.params["channels_last"] and x.dim() == 4 else x

    # ------------------------------------------------------------------ checkpoint state

    def state_dict(self, epoch: int, seconds: float, images: int) -> dict:
        return {
            "epoch": epoch,
            "backbone": self.backbone.state_dict(),
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "loader": self.loader.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.cuda else None,
            "best_top1": self.best_top1,
            "best_epoch": self.best_epoch,
            "seconds": seconds,
            "images": images,
            "loss_history": self.loss_history,
        }

    def load_state_dict(self, state: dict) -> None:
        self.backbone.load_state_dict(state["backbone"])
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.loader.load_state_dict(state["loader"])
        torch.set_rng_state(state["torch_rng"])
        if self.cuda and state["cuda_rng"] is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.start_epoch = state["epoch"] + 1
        self.best_top1, self.best_epoch = state["best_top1"], state["best_epoch"]
        self.seconds_before, self.images_before = state["seconds"], state["images"]
        self.loss_history = list(state["loss_history"])

    # ------------------------------------------------------------------ loop

    def fit(self) -> TrainOutcome:
        steps = self.loader.steps_per_epoch
        self.reporter.start(self.label, self.epochs, steps, self.start_epoch)
        seconds, images = self.seconds_before, self.images_before
        final, calibration = None, {}
        for epoch in range(self.start_epoch, self.epochs):
            start = time.perf_counter()
            mean_loss = self._train_epoch(epoch, steps)
            if self.cuda:
                torch.cuda.synchronize()
            seconds += time.perf_counter() - start
            images += len(self.data.train_y)
            self.loss_history.append(mean_loss)
            last = epoch == self.epochs - 1
            top1 = None
            if last:
                calibration, spent = self._calibrate()
                seconds += spent
            if last or (epoch + 1) % self.params["eval_every"] == 0:
                final = self.evaluate()
                top1 = float(final.top1)  # a plain float: checkpoints hold plain data only
                if top1 > self.best_top1:
                    self.best_top1, self.best_epoch = top1, epoch
            if self.save_checkpoint is not None:
                self.save_checkpoint(self.state_dict(epoch, seconds, images))
            self.reporter.epoch_end(epoch, top1)
        self.reporter.finish()
        if final is None:  # no epoch to train (post-hoc only, or resumed after the last one)
            calibration, spent = self._calibrate()
            seconds += spent
            final = self.evaluate()
            if self.best_top1 < 0:
                self.best_top1 = float(final.top1)
        return TrainOutcome(final, self.best_top1, self.best_epoch, seconds, images, self.loss_history, calibration)

    def _calibrate(self) -> tuple[dict, float]:
        start = time.perf_counter()
        chosen = self.method.calibrate(self)
        return chosen, time.perf_counter() - start

    def _train_epoch(self, epoch: int, steps: int) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(epoch, self.epochs, self.params)
        self.backbone.train()
        self.method.train()
        total = torch.zeros((), device=self.device)
        tick, seen = time.perf_counter(), 0
        for step, batches in enumerate(self.loader.epoch()):
            loss = self.train_step(batches, Progress(epoch, self.epochs, step, steps))
            total += loss
            seen += len(next(iter(batches.values())).labels)
            if self.step_hook is not None:
                self.step_hook(epoch, step, loss)
            # reading the loss synchronises the device, so only every few steps
            if step % 10 == 9 or step == steps - 1:
                value = distributed.mean(loss).item()  # every rank sees the same value, and stops alike
                if not math.isfinite(value):
                    raise NonFiniteLoss(f"loss became {value} at epoch {epoch + 1}, step {step + 1}")
                now = time.perf_counter()
                self.reporter.step(epoch, step, value, seen / max(now - tick, 1e-9))
        distributed.sync_buffers(self.backbone, self.method)
        mean = distributed.mean(total / steps).item()
        if not math.isfinite(mean):
            raise NonFiniteLoss(f"loss became {mean} during epoch {epoch + 1}")
        return mean

    def train_step(self, batches: dict, progress: Progress) -> torch.Tensor:
        """One optimiser step on one step's batches; returns the detached loss."""
        for batch in batches.values():
            batch.views = [self._to_device_layout(v) for v in batch.views]
        with self.autocast():
            if self.data_parallel is None:
                loss = self.method.loss(self.backbone, batches, progress)
            else:
                loss = self.data_parallel(batches, progress)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    @torch.no_grad()
    def features(self, x, y) -> torch.Tensor:
        """Backbone features (fp32) of the given uint8 images, un-augmented, in eval mode; for
        post-hoc calibration on training images."""
        self.backbone.eval()
        batch_size = 1024 if self.cuda else 256
        chunks = []
        for images, _ in eval_batches(self.data, x, y, self.device, batch_size, self.params):
            with self.autocast():
                chunks.append(self.backbone(self._to_device_layout(images)).float())
        return torch.cat(chunks)

    @torch.no_grad()
    def evaluate(self, x=None, y=None) -> ClassCounts:
        """Per-class counts on the balanced test set (or on the given images)."""
        self.backbone.eval()
        self.method.eval()
        x = self.data.test_x if x is None else x
        y = self.data.test_y if y is None else y
        counts = ClassCounts.from_predictions(torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long),
                                              self.data.num_classes)
        # large batches thrash a CPU's caches; a GPU wants them large
        batch_size = 1024 if self.cuda else 256
        # each rank evaluates every W-th image; the per-class counts add up across ranks
        shard = slice(distributed.rank(), None, distributed.world_size())
        for images, labels in eval_batches(self.data, x[shard], y[shard], self.device, batch_size, self.params):
            with self.autocast():
                logits = self.method.logits(self.backbone(self._to_device_layout(images)))
            counts = counts + ClassCounts.from_predictions(logits.argmax(1), labels, self.data.num_classes)
        return distributed.sum_class_counts(counts)
