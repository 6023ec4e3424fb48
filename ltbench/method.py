"""The method plugin interface: what differs between long-tailed methods, and nothing else.

The trainer owns the loop. A method says which batches an epoch draws (`draws`), owns its
heads (it is an nn.Module, so they train and checkpoint with the backbone), computes the
loss of one step, and turns features into logits for evaluation. State a method accumulates
in training and reads at evaluation (a moving average of the features, say:
ltbench.moving_average) is a buffer of the method, so checkpoints and resume carry it; `logits`
is the evaluation's only entry, so a test-time step (TDE's counterfactual) goes there and the
loss calls the training head itself.
"""

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from ltbench.errors import UserError
from ltbench.experts import is_multi_expert
from ltbench.mixing import check_mix, mixed_loss
from ltbench.models import create_backbone
from ltbench.settings import Setting, Stage2Plan, as_settings, with_default

if TYPE_CHECKING:
    from ltbench.data.datasets import DatasetInfo
    from ltbench.teacher import FrozenTeacher, Teacher


@dataclass(frozen=True)
class View:
    """One augmented view of a draw's images: an augmentation's name (ltbench.data.loader.AUGMENTATIONS
    for CIFAR-sized data, ltbench.data.image_loader.IMAGE_VIEWS for image files) and its keyword arguments."""

    augment: str = "standard"
    options: dict = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Draw:
    """One stream of batches per step: which sampler picks the images, how many augmented views."""

    sampler: str = "instance"  # instance | class_balanced | sqrt | reversed
    views: int = 1
    augment: str = "standard"  # a name in ltbench.data.loader.AUGMENTATIONS
    augment_options: dict = field(default_factory=dict, hash=False)  # keyword arguments of that augmentation
    # views of the same images each with its own augmentation (MoCo's query and key, BCL's classifier
    # view and two contrastive ones): where given, they are the draw's views, in this order, and
    # `views` is their number
    per_view: tuple[View, ...] = ()
    # class_balanced only: images of a class per class draw (decoupling's ClassAwareSampler
    # num_samples_cls; 4 in its stage 2)
    per_class: int = 1
    # mix the batch's images in pairs before the method sees them (ltbench.mixing): "mixup"
    # (Zhang et al. 2018) or "cutmix" (Yun et al. 2019), lambda ~ Beta(mix_alpha, mix_alpha);
    # the Batch then carries both label sets and lambda, for a loss that knows how to use them
    mix: str = "none"
    mix_alpha: float = 1.0

    def __post_init__(self):
        if isinstance(self.per_class, bool) or not isinstance(self.per_class, int) or self.per_class < 1:
            raise ValueError(f"Draw.per_class must be an int >= 1, got {self.per_class!r}")
        if self.per_class != 1 and self.sampler != "class_balanced":
            raise ValueError(f"Draw.per_class is the class_balanced sampler's; the {self.sampler} sampler has none")
        check_mix(self.mix, self.mix_alpha)
        if self.per_view:
            if self.views not in (1, len(self.per_view)) or self.augment_options:
                raise ValueError(f"a Draw with per_view takes its views from it: {len(self.per_view)} views, "
                                 f"got views={self.views} and augment_options={self.augment_options}")
            object.__setattr__(self, "per_view", tuple(self.per_view))
            object.__setattr__(self, "views", len(self.per_view))

    def view_list(self) -> tuple[View, ...]:
        """Each view's augmentation, in the order of the Batch's views."""
        return self.per_view or (View(self.augment, self.augment_options),) * self.views


@dataclass
class Batch:
    views: list[torch.Tensor]  # `Draw.views` augmented float tensors of the same images
    labels: torch.Tensor
    # where the Draw mixes (ltbench.mixing): the views are lam * image + (1 - lam) * its partner's
    # (or its partner's box pasted in), `labels` the images' own and `labels_b` the partners'
    labels_b: torch.Tensor | None = None
    lam: float = 1.0


@dataclass(frozen=True)
class Progress:
    epoch: int  # 0-based
    epochs: int
    step: int
    steps: int
    # the learning rate this step trains at, for statistics a method lets follow the schedule
    # (TDE's moving-average decay); None where no optimiser steps (throughput and profile benches)
    lr: float | None = None

    @property
    def fraction(self) -> float:
        """Training progress in [0, 1), for schedules written in terms of epoch / T_max."""
        return (self.epoch + self.step / self.steps) / self.epochs


class Method(nn.Module):
    """A method is a subclass with a `name`; its docstring's first paragraph is its `summary`,
    the one line `ltbench list` prints, with the paper it comes from."""

    name: ClassVar[str]
    display_name: ClassVar[str | None] = None  # as tables print it (LDAM-DRW); default: the name
    summary: ClassVar[str] = ""  # from the docstring, unless the class sets it
    # The method's own hyperparameters, each a `ltbench.settings.Setting` with its paper default
    # (a plain value is accepted too, typed by that value). They live under the method's name in
    # a spec, so they never collide with another plugin's: --set NAME.KEY=VALUE, or --set
    # KEY=VALUE where only one method of the sweep has KEY.
    hyperparameters: ClassVar[dict] = {}
    # Values the paper protocol gives the trainer's settings for this method (ltbench.settings.SETTINGS
    # names, e.g. batch size, lr); they win over a dataset's protocol (ltbench.sweep.resolve).
    trainer_defaults: ClassVar[dict] = {}
    # Where each of trainer_defaults' values comes from (paper section, original file and line),
    # by setting name; `ltbench list METHOD` prints it beside the value.
    trainer_sources: ClassVar[dict[str, str]] = {}
    # Where a paper gives one dataset its own trainer values for this method (Cao et al.'s
    # iNaturalist schedule, say): {dataset name: {setting: (value, source)}}. They win over
    # trainer_defaults on that dataset.
    dataset_trainer_defaults: ClassVar[dict[str, dict[str, tuple]]] = {}
    # Datasets on which this method's paper protocol is not confirmed from its source: {dataset
    # name: why}. A run there is labelled custom, never paper (ltbench.sweep.resolve), so no
    # report compares it with a paper's figure as a reproduction; `ltbench list METHOD` says why.
    unconfirmed_protocol: ClassVar[dict[str, str]] = {}
    draws: ClassVar[dict[str, Draw]] = {"main": Draw()}
    # Two-stage methods (decoupling, Kang et al. 2020) name the method whose finished run with
    # the same spec is their stage 1. The launcher reuses that run (or trains it as a run of
    # its own), loads its weights, freezes the backbone and trains this method as `stage2()` says.
    stage1: ClassVar[type["Method"] | None] = None
    # Methods that distil name their frozen teacher, a finished run of another method
    # (ltbench.teacher.Teacher); the launcher reuses or trains it first and gives it to
    # `load_teacher`. A student trains from scratch: its teacher is not a stage 1.
    teacher: ClassVar["Teacher | None"] = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own_doc = cls.__dict__.get("__doc__")  # never a base class's: that describes the base
        if "summary" not in cls.__dict__:
            first = inspect.cleandoc(own_doc).split("\n\n")[0] if own_doc else ""
            cls.summary = " ".join(first.split()).removesuffix(".")

    def __init__(self, hp: dict, class_counts: list[int], feature_dim: int):
        super().__init__()
        self.hp = hp  # this method's own hyperparameters, resolved
        self.register_buffer("class_counts", torch.tensor(class_counts, dtype=torch.float))
        self.num_classes = len(class_counts)
        self.feature_dim = feature_dim

    @classmethod
    def title(cls) -> str:
        return cls.display_name or cls.name

    @classmethod
    def settings(cls, dataset: "DatasetInfo") -> dict[str, Setting]:
        """This method's hyperparameters with their paper defaults on `dataset`; override to set a
        default per dataset (one temperature for CIFAR-10 and another for CIFAR-100, say)."""
        return as_settings(cls.hyperparameters)

    @classmethod
    def defaults(cls, dataset: "DatasetInfo | None" = None) -> dict:
        """The default value of each of this method's hyperparameters (on `dataset`, where given)."""
        schema = cls.settings(dataset) if dataset is not None else as_settings(cls.hyperparameters)
        return {name: setting.default for name, setting in schema.items()}

    @classmethod
    def protocol_defaults(cls, dataset: "DatasetInfo | None" = None) -> dict:
        """The trainer settings this method's paper protocol changes (on `dataset`, where
        given); a two-stage method's include its stage 1's, which are part of what defines the run."""
        first = cls.stage1.protocol_defaults(dataset) if cls.stage1 is not None else {}
        own = cls.dataset_trainer_defaults.get(dataset.name, {}) if dataset is not None else {}
        return {**first, **cls.trainer_defaults, **{key: value for key, (value, _) in own.items()}}

    @classmethod
    def trainer_source(cls, key: str, dataset: "DatasetInfo") -> str | None:
        """Where this method's own paper value of trainer setting `key` on `dataset` comes
        from; None where the method sets none (a stage 1's are that method's own)."""
        own = cls.dataset_trainer_defaults.get(dataset.name, {})
        if key in own:
            return own[key][1]
        if key in cls.trainer_defaults:
            return cls.trainer_sources.get(key, f"{cls.name}: no source given")
        return None

    @classmethod
    def paper_protocol_confirmed(cls, dataset: "DatasetInfo") -> bool:
        """Whether a paper-preset run on `dataset` follows a confirmed protocol (its chain's)."""
        return all(dataset.name not in c.unconfirmed_protocol for c in cls.chain())

    @classmethod
    def chain(cls) -> list[type["Method"]]:
        """The methods a run of this one trains, stage 1 first."""
        return [*(cls.stage1.chain() if cls.stage1 is not None else []), cls]

    @classmethod
    def create_backbone(cls, name: str, in_chans: int, hyperparameters: dict) -> nn.Module:
        """The backbone a run of this method trains: timm's model `name` as a feature extractor.
        A method whose heads take other features (one per expert: ltbench.experts) builds them here
        from the run's hyperparameters (by method name, as in a spec); a stage 2 trains on the
        backbone of its stage 1."""
        if cls.stage1 is not None:
            return cls.stage1.create_backbone(name, in_chans, hyperparameters)
        return create_backbone(name, in_chans)

    @classmethod
    def check_backbone(cls, name: str) -> None:
        """Raise a UserError for a backbone (a timm name) this method cannot train on; a method
        that overrides `create_backbone` says here which names that builds from. By default a
        multi-expert backbone (one feature vector per expert) is refused: the heads take one."""
        if cls.stage1 is not None:
            return cls.stage1.check_backbone(name)
        if is_multi_expert(name):
            raise UserError(f"backbone '{name}' gives one feature vector per expert, and {cls.name} takes one per "
                            "image", hint=f"use its plain form, --backbone {name.removeprefix('ride_')}, or a "
                            "method built on experts (ride)")

    @classmethod
    def check(cls, hp: dict) -> None:
        """Raise a UserError for combinations of this method's hyperparameters it cannot run
        with; each value's own range is checked by its Setting before this is called."""

    def loss(self, backbone: nn.Module, batches: dict[str, Batch], progress: Progress) -> torch.Tensor:
        raise NotImplementedError

    def record(self, **values) -> None:
        """Report parts of this step's loss, or figures behind it (a branch weight, whether
        re-weighting is on), for the run's history: the trainer averages each over the epoch's
        steps and writes it to history.csv beside the total loss. Call it from `loss` with
        detached tensors or floats; tensors are read once an epoch, so recording costs no
        device synchronisation."""
        self.__dict__.setdefault("_recorded", {}).update(values)

    def take_recorded(self) -> dict:
        """What `record` collected since the last call (the trainer calls it after each step)."""
        return self.__dict__.pop("_recorded", {})

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, progress: Progress) -> None:
        """Called by the trainer right after each optimiser step, without gradients: a
        constraint on this method's own weights (MaxNorm's projection, ltbench.constraints)
        applies here. `progress` says which step of which epoch it was."""

    def no_weight_decay(self) -> set[str]:
        """Names (as `named_parameters` gives them) of this method's parameters that train without
        weight decay, as timm models' `no_weight_decay()` names theirs."""
        return set()

    def calibrate(self, trainer) -> dict:
        """Post-hoc choices made on the validation split (`trainer.data.val_x` / `val_y`) just
        before the final evaluation (e.g. tau-normalisation's tau); returns what the result
        should record. Never sees the test set."""
        return {}

    def load_teacher(self, teacher: "FrozenTeacher") -> None:
        """Keep the frozen teacher (a method with a `teacher`) outside this module's own
        parameters and state, so nothing of it trains, moves or is checkpointed with the
        student; `ltbench.teacher.teacher_of(self)` gives it back."""
        self.__dict__["teacher_model"] = teacher

    # ---------------------------------------------------------------- two-stage methods

    def load_stage1(self, stage1: "Method") -> None:
        """Take what stage 2 starts from out of the trained stage-1 method (e.g. its classifier)."""

    def stage2(self) -> Stage2Plan:
        """How stage 2 trains (ltbench.settings.Stage2Plan): its epochs and batch size, the
        trainer settings that replace the spec's (lr, schedule, ...), whether the schedule steps
        before each epoch, whether the frozen backbone's BatchNorm stays in train mode, and which
        parts of the stage-1 model it trains (`trains`)."""
        raise NotImplementedError


# How a linear classifier's weight starts; its bias keeps nn.Linear's own init in every case.
CLASSIFIER_INITS = {
    "kaiming_normal": nn.init.kaiming_normal_,
    "xavier_uniform": nn.init.xavier_uniform_,
    "default": lambda weight: weight,  # nn.Linear's own, kaiming_uniform_(a=sqrt(5))
}
# LDAM-DRW's ResNet-32 applies kaiming_normal_ to every nn.Linear (models/resnet_cifar.py L32-35,
# `self.apply(_weights_init)` at L105), so the CIFAR-LT baselines of its code start there;
# classifier-balancing's classifier is a plain nn.Linear (models/DotProductClassifier.py L25).
LDAM_INIT = "LDAM-DRW models/resnet_cifar.py L32-35, L105: kaiming_normal_ on the nn.Linear"
DECOUPLING_INIT = "classifier-balancing models/DotProductClassifier.py L25: nn.Linear's own init"


def classifier_init(default: str, source: str) -> Setting:
    return Setting(default, "how the linear classifier's weight starts (its bias keeps nn.Linear's init)",
                   choices=tuple(CLASSIFIER_INITS), source=source, earlier="default")


class LinearClassifierMethod(Method):
    """A backbone and one linear classifier trained on instance-sampled batches; subclasses
    only say how logits and labels become a loss. A subclass that declares `classifier_init`
    (`classifier_init(default, source)`) has its weight started that way on CIFAR-sized data; on
    the image-file datasets the decoupling protocol's plain nn.Linear is the default."""

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        self.classifier = nn.Linear(feature_dim, self.num_classes)
        CLASSIFIER_INITS[hp.get("classifier_init", "default")](self.classifier.weight)

    @classmethod
    def settings(cls, dataset):
        own = super().settings(dataset)
        if "classifier_init" in own and dataset.family != "cifar":
            own["classifier_init"] = with_default(own["classifier_init"], "default", DECOUPLING_INIT)
        return own

    def logits(self, features):
        return self.classifier(features)

    def loss(self, backbone, batches, progress):
        batch = batches["main"]
        logits = self.logits(backbone(batch.views[0]))
        # a Draw that mixes (mixup, cutmix) gives two label sets: lambda-weighted criteria
        return mixed_loss(lambda out, labels: self.criterion(out, labels, progress), logits.float(), batch)

    def criterion(self, logits: torch.Tensor, labels: torch.Tensor, progress: Progress) -> torch.Tensor:
        raise NotImplementedError
