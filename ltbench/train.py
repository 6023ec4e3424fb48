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
from ltbench.checkpoints import weights_copy
from ltbench.data.datasets import LongTailData, has_validation
from ltbench.data.pipeline import eval_batches, make_loader
from ltbench.method import Method, Progress
from ltbench.metrics import ClassCounts, group_accuracy
from ltbench.mixing import mix_batch


class NonFiniteLoss(RuntimeError):
    pass


def learning_rate(epoch: int, epochs: int, p: dict, step_first: bool = False) -> float:
    """Learning rate for a 0-based epoch, set once at the start of the epoch (as LDAM-DRW does).
    With `step_first` (Stage2Plan.lr_step_first: decoupling's stage 2, whose code steps its
    scheduler before each epoch's steps) epoch e trains at the lr the schedule gives epoch
    e + 1: a cosine's last epoch at 0."""
    warmup = p["warmup_epochs"]
    if epoch < warmup:
        return p["lr"] * (epoch + 1) / warmup
    if step_first:
        epoch += 1
    if p["schedule"] == "cosine":
        return p["lr"] * 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / max(epochs - warmup, 1)))
    factor = 1.0
    for milestone, f in zip(p["milestones"], p["lr_factors"]):
        if epoch >= round(milestone * epochs):
            factor = f
    return p["lr"] * factor


class Reporter:
    """Progress callbacks; the default reports nothing. `epoch_end` gets the epoch's history
    row (`Trainer.history`), after the epoch's checkpoint is saved."""

    def start(self, label: str, epochs: int, steps: int, start_epoch: int) -> None: ...
    def step(self, epoch: int, step: int, loss: float, images_per_s: float) -> None: ...
    def epoch_end(self, record: dict) -> None: ...
    def finish(self) -> None: ...


@dataclass
class TrainOutcome:
    final: ClassCounts
    best_top1: float
    best_epoch: int
    train_seconds: float  # this process's training time plus the time recorded before any resume
    images_seen: int
    history: list[dict] = field(default_factory=list)  # Trainer.history
    calibration: dict = field(default_factory=dict)  # what Method.calibrate chose, e.g. {"tau": 0.9}
    predictions: dict | None = None  # test-set predictions (Trainer.evaluate_test_set), where asked for
    validation: ClassCounts | None = None  # the final model's, on the validation split; None where there is none
    # the test top-1 at the evaluated epoch best on validation, and that epoch (0-based); -1 where none
    top1_bestval: float | None = None
    bestval_epoch: int = -1


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
    shot_rule: str = "cb"  # how history rows group classes into many / medium / few
    step_hook: callable = None  # (epoch, step, loss tensor) -> None; used by tests to watch the loss
    lr_step_first: bool = False  # a stage 2's Stage2Plan.lr_step_first (ltbench.stages.stage2_setup)

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
        # model selection on validation: the best validation top-1 so far, its epoch, and the
        # test top-1 there (reported as top1_bestval; top1_best is chosen on test)
        self.best_val_top1, self.bestval_epoch, self.top1_bestval = -1.0, -1, None
        self.bestval_weights = None  # that epoch's backbone and method (a stage 2 may start there)
        self.seconds_before, self.images_before = 0.0, 0
        # one row per finished epoch: epoch (1-based), lr, loss, the method's recorded parts,
        # images/s, training seconds so far, and top-1 / many / medium / few where evaluated
        self.history: list[dict] = []

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
            "best_val_top1": self.best_val_top1,
            "bestval_epoch": self.bestval_epoch,
            "top1_bestval": self.top1_bestval,
            "bestval_weights": self.bestval_weights,
            "seconds": seconds,
            "images": images,
            "history": self.history,
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
        # checkpoints of earlier versions chose nothing on validation
        self.best_val_top1 = state.get("best_val_top1", -1.0)
        self.bestval_epoch, self.top1_bestval = state.get("bestval_epoch", -1), state.get("top1_bestval")
        self.bestval_weights = state.get("bestval_weights")
        self.seconds_before, self.images_before = state["seconds"], state["images"]
        # checkpoints of earlier versions kept the mean loss per epoch only
        self.history = [dict(row) for row in state["history"]] if "history" in state else [
            {"epoch": e + 1, "loss": loss} for e, loss in enumerate(state.get("loss_history", []))]

    # ------------------------------------------------------------------ loop

    def fit(self) -> TrainOutcome:
        steps = self.loader.steps_per_epoch
        self.reporter.start(self.label, self.epochs, steps, self.start_epoch)
        seconds, images = self.seconds_before, self.images_before
        final, calibration, predictions, validation = None, {}, None, None
        keep_predictions = bool(self.params.get("save_predictions"))
        for epoch in range(self.start_epoch, self.epochs):
            start = time.perf_counter()
            mean_loss, recorded = self._train_epoch(epoch, steps)
            if self.cuda:
                torch.cuda.synchronize()
            spent = time.perf_counter() - start
            seconds += spent
            images += len(self.data.train_y)
            last = epoch == self.epochs - 1
            record = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"], "loss": mean_loss, **recorded,
                      "images_per_s": len(self.data.train_y) / max(spent, 1e-9)}
            if last:
                calibration, spent = self._calibrate()
                seconds += spent
            record["wall_s"] = seconds
            if last or (epoch + 1) % self.params["eval_every"] == 0:
                final, predictions = self.evaluate_test_set(predictions=last and keep_predictions)
                validation = self.evaluate_validation()
                # plain floats: checkpoints hold plain data only
                record.update(top1=float(final.top1), **group_accuracy(final, self.data.class_counts, self.shot_rule),
                              **self._validation_record(validation))
                if record["top1"] > self.best_top1:
                    self.best_top1, self.best_epoch = record["top1"], epoch
                self._select_on_validation(validation, record["top1"], epoch)
            self.history.append(record)
            if self.save_checkpoint is not None:
                self.save_checkpoint(self.state_dict(epoch, seconds, images))
            self.reporter.epoch_end(record)
        self.reporter.finish()
        if final is None:  # no epoch to train (post-hoc only, or resumed after the last one)
            calibration, spent = self._calibrate()
            seconds += spent
            final, predictions = self.evaluate_test_set(predictions=keep_predictions)
            validation = self.evaluate_validation()
            if self.best_top1 < 0:
                self.best_top1 = float(final.top1)
            if self.top1_bestval is None:
                self._select_on_validation(validation, float(final.top1), self.best_epoch)
        return TrainOutcome(final, self.best_top1, self.best_epoch, seconds, images, self.history, calibration,
                            predictions, validation, self.top1_bestval, self.bestval_epoch)

    def _validation_record(self, counts: ClassCounts | None) -> dict:
        """A history row's validation columns: top-1 and many / medium / few (grouped by the
        classes' training counts); empty where there is no validation split."""
        if counts is None:
            return {}
        groups = group_accuracy(counts, self.data.class_counts, self.shot_rule)
        return {"val_top1": float(counts.top1), **{f"val_{g}": acc for g, acc in groups.items()}}

    def _select_on_validation(self, counts: ClassCounts | None, top1: float, epoch: int) -> None:
        # the first epoch of the best validation top-1, as top1_best takes the first best on test
        if counts is not None and counts.top1 > self.best_val_top1:
            self.best_val_top1, self.bestval_epoch, self.top1_bestval = float(counts.top1), epoch, float(top1)
            self.bestval_weights = weights_copy(self.backbone, self.method)

    def _calibrate(self) -> tuple[dict, float]:
        start = time.perf_counter()
        chosen = self.method.calibrate(self)
        return chosen, time.perf_counter() - start

    def _train_epoch(self, epoch: int, steps: int) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(epoch, self.epochs, self.params, self.lr_step_first)
        self.backbone.train()
        self.method.train()
        total = torch.zeros((), device=self.device)
        recorded = {}  # the method's recorded parts, summed over the epoch's steps
        tick, seen = time.perf_counter(), 0
        for step, batches in enumerate(self.loader.epoch()):
            progress = Progress(epoch, self.epochs, step, steps, lr=self.optimizer.param_groups[0]["lr"])
            loss = self.train_step(batches, progress)
            total += loss
            for name, value in self.method.take_recorded().items():
                recorded[name] = recorded.get(name, 0.0) + value
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
        return mean, {name: float(distributed.mean(torch.as_tensor(value, device=self.device) / steps))
                      for name, value in recorded.items()}

    def train_step(self, batches: dict, progress: Progress) -> torch.Tensor:
        """One optimiser step on one step's batches; returns the detached loss."""
        for name, batch in batches.items():
            mix_batch(batch, self.method.draws[name])  # mixup / cutmix, where the method's Draw asks for it
            batch.views = [self._to_device_layout(v) for v in batch.views]
        with self.autocast():
            if self.data_parallel is None:
                loss = self.method.loss(self.backbone, batches, progress)
            else:
                loss = self.data_parallel(batches, progress)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self.method.after_step(progress)
        return loss.detach()

    @torch.no_grad()
    def features(self, x, y) -> torch.Tensor:
        """Backbone features (fp32) of the given images, un-augmented, in eval mode; for
        post-hoc choices on the validation split."""
        self.backbone.eval()
        batch_size = 1024 if self.cuda else 256
        chunks = []
        for images, _ in eval_batches(self.data, x, y, self.device, batch_size, self.params):
            with self.autocast():
                chunks.append(self.backbone(self._to_device_layout(images)).float())
        return torch.cat(chunks)

    @torch.no_grad()
    def evaluate(self, x=None, y=None, keep: list | None = None) -> ClassCounts:
        """Per-class counts on the balanced test set (or on the given images). With a list as
        `keep`, each batch's per-image predictions (`top_predictions`) are appended to it."""
        self.backbone.eval()
        self.method.eval()
        x = self.data.test_x if x is None else x
        y = self.data.test_y if y is None else y
        counts = ClassCounts.from_predictions(torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long),
                                              self.data.num_classes)
        # large batches thrash a CPU's caches; a GPU wants them large
        batch_size = 1024 if self.cuda else 256
        # the per-class counts of the ranks' shares add up across ranks
        shard = evaluation_share()
        for images, labels in eval_batches(self.data, x[shard], y[shard], self.device, batch_size, self.params):
            with self.autocast():
                logits = self.method.logits(self.backbone(self._to_device_layout(images)))
            counts = counts + ClassCounts.from_predictions(logits.argmax(1), labels, self.data.num_classes)
            if keep is not None:
                keep.append(top_predictions(logits.float(), labels))
        return distributed.sum_class_counts(counts)

    def evaluate_validation(self) -> ClassCounts | None:
        """Counts on the validation split (the test transform, as the test set), or None where
        the data has no validation image."""
        if not has_validation(self.data):
            return None
        return self.evaluate(self.data.val_x, self.data.val_y)

    def evaluate_test_set(self, predictions: bool) -> tuple[ClassCounts, dict | None]:
        """Counts on the test set, and with `predictions` its per-image predictions in order."""
        kept = [] if predictions else None
        counts = self.evaluate(keep=kept)
        return counts, (test_predictions(kept, len(self.data.test_y)) if predictions else None)


def evaluation_share() -> slice:
    """The images this rank evaluates: every W-th, from its rank's place."""
    return slice(distributed.rank(), None, distributed.world_size())


# How many of each image's most likely classes a predictions file keeps (with their logits)
TOP_K = 5


def top_predictions(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """One batch's per-image record: true and predicted class, the predicted class's softmax
    probability (for calibration), and the top-k classes with their logits."""
    k = min(TOP_K, logits.shape[1])
    top_logits, top_classes = logits.topk(k, dim=1)
    return {"label": labels.int(), "predicted": top_classes[:, 0].int(),
            "confidence": logits.softmax(1).max(1).values, "topk_classes": top_classes.int(),
            "topk_logits": top_logits.half()}


def test_predictions(batches: list[dict], n_images: int) -> dict:
    """The batches' records joined into numpy arrays in test-set order. Each rank evaluated
    its share (`evaluation_share`): the ranks' parts are gathered and put back in place."""
    joined = {name: torch.cat([batch[name] for batch in batches]) for name in batches[0]} if batches else {}
    if distributed.is_distributed():
        places = None
        for name, part in joined.items():
            gathered = distributed.gather(part)  # rank 0's images, then rank 1's, ...
            if places is None:  # where each gathered image stands in the test set, gathered the same way
                places = distributed.gather(torch.arange(n_images, device=part.device)[evaluation_share()])
            full = torch.empty((n_images, *part.shape[1:]), dtype=part.dtype, device=gathered.device)
            full[places] = gathered
            joined[name] = full
    return {name: value.cpu().numpy() for name, value in joined.items()}
