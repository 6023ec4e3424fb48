"""Every setting a run takes, declared once: type, allowed values, default, help and kind.

A setting's *kind* decides what it means for a run:

- ``protocol``: it defines the experiment (what is trained, on what, for how long). Protocol
  settings make up the run id, and a value other than the preset's labels a run `custom`.
- ``execution``: it says how or where the run is computed (memory layout, compilation, data
  loader, precision where the paper protocol does not fix it). Execution settings are
  recorded in the result row and never change the run id or the preset label, so the same
  sweep on another machine, with other speed settings, finds the runs that exist.

Methods declare their own hyperparameters with the same `Setting` (``Method.hyperparameters``);
they live under the method's name in a spec, so two plugins never share a key.
Validation, ``--set`` coercion, ``ltbench run --help`` and ``ltbench list --settings`` all
read this module. A setting may also declare the range an equal-budget search draws it from
(``Search``; the space of a run: ltbench.search_space).
"""

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from ltbench.errors import UserError

PROTOCOL, EXECUTION = "protocol", "execution"


class _Same:
    def __repr__(self) -> str:
        return "SAME"


SAME = _Same()  # Setting.earlier: runs made before the setting existed ran with its default
UNSET_WORDS = ("", "none", "null", "unset")  # an optional setting given as one of these is unset


CATEGORICAL = (type(None), bool, int, float, str)  # what a search's choices may be (as Optuna's)


@dataclass(frozen=True)
class Search:
    """The range an equal-budget search draws a setting from, declared beside the setting
    (`Setting(..., search=Search(...))`), as DomainBed declares each random range beside its default.

    Numbers from `low` to `high` (inclusive), log-uniform where `log`, or one of `choices`. An
    int setting draws ints. `relative`: low and high are factors of the run's own value (the
    paper's on its dataset, after the preset), for a range that moves with the protocol as the
    learning rate does with the batch size. `source` says what motivates the range: a paper's
    table or section, or "ltbench default" and why."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None
    relative: bool = False
    source: str = ""

    def __post_init__(self):
        problem = self._problem()
        if problem:
            raise ValueError(f"Search: {problem}")

    def _problem(self) -> str | None:
        if self.choices is not None:
            if (self.low, self.high, self.log, self.relative) != (None, None, False, False):
                return "give choices, or low and high (with log, relative), not both"
            if not isinstance(self.choices, tuple) or len(self.choices) < 2:
                return f"choices must be a tuple of two or more values, got {self.choices!r}"
            if any(type(c) not in CATEGORICAL for c in self.choices):
                return f"choices must be None, bools, ints, floats or strings, got {self.choices!r}"
            if len({(type(c), c) for c in self.choices}) != len(self.choices):
                return f"choices repeat a value: {self.choices!r}"
            return None
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
               for v in (self.low, self.high)):
            return f"needs finite numbers low and high (or choices), got low={self.low!r}, high={self.high!r}"
        if not self.low < self.high:
            return f"low must be below high, got {self.low:g} .. {self.high:g}"
        if self.log and self.low <= 0:
            return f"a log scale needs a positive range, got {self.low:g} .. {self.high:g}"
        if self.relative and self.low <= 0:
            return f"relative bounds are positive factors of the run's value, got {self.low:g} .. {self.high:g}"
        return None

    @property
    def scale(self) -> str:
        return "choice" if self.choices is not None else "log" if self.log else "linear"

    def around(self, value) -> "Search":
        """The absolute range for a run whose own value of the setting is `value`."""
        if not self.relative:
            return self
        return replace(self, low=self.low * value, high=self.high * value, relative=False)


@dataclass(frozen=True)
class Setting:
    default: Any
    help: str = ""
    kind: str = PROTOCOL
    choices: tuple | None = None  # the only values allowed
    low: float | None = None  # inclusive bounds, for numbers and each item of a list
    high: float | None = None
    above: float | None = None  # exclusive lower bound (a learning rate > 0)
    below: float | None = None  # exclusive upper bound (momentum < 1)
    optional: bool = False  # None allowed ("unset: the dataset's value")
    dtype: type | None = None  # the value's type; inferred from the default when not given
    item_type: type | None = None  # for lists; inferred from the default's first item
    # where the default comes from: a paper's section or table, or an original code base's
    # file and line; `ltbench list METHOD` prints it beside the value
    source: str = ""
    # the value runs of an earlier ltbench, made before this setting existed, were trained with
    # (their migrated spec records it); SAME where that is the default
    earlier: Any = SAME
    # the range `ltbench tune` draws this setting from; None: the search keeps its value
    search: Search | None = None
    # kept out of a run's spec, and so out of its run id, while it has its default: a setting
    # added after runs existed leaves their ids as they were (ltbench.settings.in_spec)
    omit_at_default: bool = False

    def __post_init__(self):
        if self.kind not in (PROTOCOL, EXECUTION):
            raise ValueError(f"kind must be {PROTOCOL} or {EXECUTION}, got {self.kind!r}")
        if self.search is not None:
            try:
                self.searched("the setting", self.default)
            except UserError as e:
                raise ValueError(f"{e} ({e.hint})" if e.hint else str(e)) from None

    @property
    def value_before(self):
        """What a run of an earlier version that did not record this setting ran with."""
        return self.default if self.earlier is SAME else self.earlier

    @property
    def value_type(self) -> type:
        if self.dtype is not None:
            return self.dtype
        if self.default is None:
            raise ValueError("a setting whose default is None needs dtype=")
        return type(self.default)

    @property
    def list_item_type(self) -> type:
        if self.item_type is not None:
            return self.item_type
        return type(self.default[0]) if self.default else str

    def type_name(self) -> str:
        if self.choices is not None:
            return "choice"
        kind = self.value_type
        name = f"list of {self.list_item_type.__name__}" if kind is list else kind.__name__
        return f"{name} or unset" if self.optional else name

    def describe_allowed(self) -> str:
        if self.choices is not None:
            return ", ".join(show_value(c) for c in self.choices)
        parts = []
        if self.low is not None:
            parts.append(f">= {self.low:g}")
        if self.above is not None:
            parts.append(f"> {self.above:g}")
        if self.high is not None:
            parts.append(f"<= {self.high:g}")
        if self.below is not None:
            parts.append(f"< {self.below:g}")
        return " and ".join(parts)

    def searched(self, name: str, value) -> Search:
        """This setting's search range for a run whose own value is `value`, in absolute terms;
        a UserError where it is not one the setting can take (a declaration is checked against
        its default, a run against its value)."""
        search = self.search
        if search is None:
            raise UserError(f"{name} has no search range")
        if self.kind != PROTOCOL:
            raise UserError(f"{name} is an execution setting: a search draws only what defines the experiment")
        kind = None if self.choices is not None else self.value_type
        if search.choices is not None:
            for choice in search.choices:
                if kind is not None and (type(choice) is not kind and not (kind is float and type(choice) is int)):
                    raise UserError(f"{name}: the search choice {show_value(choice)} is not {_article(kind.__name__)}")
                self._check_searched(name, choice, search, "declare choices the setting allows")
            return search
        if kind not in (int, float):
            raise UserError(f"{name}: only a number has a range to search; give choices=(...) instead")
        if search.relative:
            if kind is int:
                raise UserError(f"{name}: an int setting's search range is absolute (relative=False)")
            if value is None or value <= 0:
                raise UserError(f"{name}: a range relative to the run's value needs a positive value, got "
                                f"{show_value(value)}", hint=f"give {name} a positive value, or an absolute range")
        elif kind is int and (search.low != int(search.low) or search.high != int(search.high)):
            raise UserError(f"{name}: an int setting's search range needs whole ends, got "
                            f"{search.low:g} .. {search.high:g}")
        absolute = search.around(value)
        hint = (f"the range is {search.low:.4g} .. {search.high:.4g} times the run's {name}, "
                f"{show_value(value)}: a value nearer the protocol's keeps it inside" if search.relative
                else "declare a range inside it")
        for end in (absolute.low, absolute.high):
            self._check_searched(name, int(end) if kind is int else end, absolute, hint)
        return absolute

    def _check_searched(self, name: str, value, search: Search, hint: str) -> None:
        try:
            self.check(name, value)
        except UserError:
            shown = ", ".join(map(show_value, search.choices)) if search.choices else \
                f"{search.low:.4g} .. {search.high:.4g}"
            raise UserError(f"{name}: the search range {shown} leaves what the setting allows "
                            f"({self.describe_allowed()})", hint=hint) from None

    # ------------------------------------------------------------------ values

    def coerce(self, name: str, raw):
        """A --set string or a TOML value as this setting's type, checked; a UserError otherwise."""
        value = self._parse(name, raw)
        self.check(name, value)
        return value

    def _parse(self, name: str, raw):
        if self.optional and (raw is None or (isinstance(raw, str) and raw.strip().lower() in UNSET_WORDS)):
            return None
        if self.choices is not None:
            for choice in self.choices:
                if raw == choice and type(raw) is type(choice):
                    return choice
                if show_value(choice) == str(raw).strip().lower() or (isinstance(choice, str) and choice == str(raw).strip()):
                    return choice
            raise UserError(f"{name}={show_value(raw)} is not allowed", hint=f"use one of: {self.describe_allowed()}")
        kind = self.value_type
        try:
            if kind is list:
                items = raw if isinstance(raw, list) else [v.strip() for v in str(raw).split(",") if v.strip()]
                return [_scalar(self.list_item_type, item) for item in items]
            return _scalar(kind, raw)
        except (TypeError, ValueError, OverflowError):
            raise UserError(f"{name}={show_value(raw)}: expected {_article(self.type_name())} (default {show_value(self.default)})",
                            hint=_example(name, self)) from None

    def check(self, name: str, value) -> None:
        if value is None:
            if not self.optional:
                raise UserError(f"{name} must be set", hint=_example(name, self))
            return
        if self.choices is not None:
            if value not in self.choices:
                raise UserError(f"{name}={show_value(value)} is not allowed", hint=f"use one of: {self.describe_allowed()}")
            return
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                continue
            if not math.isfinite(item):
                raise UserError(f"{name}={show_value(value)}: must be a finite number", hint=_example(name, self))
            if ((self.low is not None and item < self.low) or (self.high is not None and item > self.high)
                    or (self.above is not None and item <= self.above)
                    or (self.below is not None and item >= self.below)):
                raise UserError(f"{name}={show_value(value)} is out of range: it must be {self.describe_allowed()}",
                                hint=_example(name, self))


def _scalar(kind: type, raw):
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(raw)
    if kind is int:
        if isinstance(raw, bool):
            raise ValueError(raw)
        number = float(raw)  # "1e3" is an int; "1.5" and "inf" are not
        if not math.isfinite(number) or number != int(number):
            raise ValueError(raw)
        return int(number)
    if kind is float:
        if isinstance(raw, bool):
            raise ValueError(raw)
        return float(raw)
    if kind is str:
        if isinstance(raw, (list, dict)):
            raise ValueError(raw)
        return str(raw)
    raise TypeError(kind)


def show_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(show_value(v) for v in value)
    if value is None:
        return "unset"
    return str(value)


def _article(text: str) -> str:
    return ("an " if text[0] in "aeiou" else "a ") + text


def _example(name: str, setting: Setting) -> str:
    allowed = setting.describe_allowed()
    return f"--set {name}={show_value(setting.default)} (the default){f'; allowed: {allowed}' if allowed else ''}"


# ---------------------------------------------------------------------- the trainer's settings

# The CIFAR-LT protocol of LDAM-DRW (Cao et al. 2019), shared by the CE-family baselines; a
# dataset's own protocol (ImageNet-LT's backbone, epochs, lr, ...) and a method's paper values
# replace these defaults, and a preset shrinks them.
LDAM_CODE = "LDAM-DRW cifar_train.py"
LDAM_SCHEDULE = (f"{LDAM_CODE} adjust_learning_rate: lr * epoch / 5 up to epoch 5, x0.01 after 160, "
                 "x0.0001 after 180")
LDAM_AUGMENT = f"{LDAM_CODE} transform_train: RandomCrop(32, padding=4), RandomHorizontalFlip, no colour jitter"
# What an equal-budget search draws for every method, centred on the run's own (paper) value, so
# that a method's protocol is the middle of its range whatever its batch size or dataset
DOMAINBED = "DomainBed hparams_registry.py"
LR_SEARCH = Search(10**-0.5, 10**0.5, log=True, relative=True,
                   source=f"{DOMAINBED}: lr 10**U(-5, -3.5) around its 5e-5 (10**U(-4.5, -2.5) on small images); here "
                   "a decade, log-uniform, centred on the protocol's lr")
WEIGHT_DECAY_SEARCH = Search(0.1, 10.0, log=True, relative=True,
                             source=f"{DOMAINBED}: weight_decay 10**U(-6, -2); here two decades, log-uniform, centred "
                             "on the protocol's weight decay (DomainBed's default, 0, has no log centre)")
SETTINGS: dict[str, Setting] = {
    # what is trained, on what data
    "profile": Setting("exp", "imbalance profile: exp (Cao et al.) or step (Buda et al.)", choices=("exp", "step"),
                       source=f"{LDAM_CODE} --imb_type exp; imbalance_cifar.py get_img_num_per_cls"),
    "backbone": Setting("resnet32_cifar", "timm model name (resnet32_cifar is the CIFAR-LT papers' ResNet-32)",
                        source=f"{LDAM_CODE} --arch resnet32; models/resnet_cifar.py"),
    "n_max": Setting(None, "head-class size; unset: the dataset's paper value (a smaller one runs a reduced set)",
                     dtype=int, optional=True, low=1, source="the dataset's construction (Cao et al. 2019: 5000, 500)"),
    "val_per_class": Setting(None, "validation images per class, the split every choice is made on (epoch, tau); "
                             "unset: the dataset's own, 50 (CIFAR-10-LT, Fashion-MNIST-LT), 20 (CIFAR-100-LT; "
                             "ImageNet-LT's and Places-LT's official lists, whole), 3 (iNaturalist 2018)",
                             dtype=int, optional=True, low=1, high=100_000,
                             source="ltbench's protocol: a validation split apart from training and test"),
    "image_size": Setting(None, "training and test image side in pixels (image-file datasets); unset: the "
                          "dataset's own", dtype=int, optional=True, low=8, high=4096,
                          source="unset: the dataset's own (32 px CIFAR-LT; 224 px in the image datasets' protocols)"),
    # how long and how
    "epochs": Setting(200, "training epochs", low=1, high=100_000, source=f"{LDAM_CODE} --epochs 200"),
    "batch_size": Setting(128, "images per step (per draw, for methods that draw several batches)", low=1,
                          high=1_000_000, source=f"{LDAM_CODE} --batch-size 128"),
    "lr": Setting(0.1, "peak learning rate (SGD)", above=0, source=f"{LDAM_CODE} --lr 0.1", search=LR_SEARCH),
    "momentum": Setting(0.9, "SGD momentum", low=0, below=1, source=f"{LDAM_CODE} --momentum 0.9"),
    "weight_decay": Setting(2e-4, "L2 weight decay", low=0, high=1, source=f"{LDAM_CODE} --wd 2e-4",
                            search=WEIGHT_DECAY_SEARCH),
    "schedule": Setting("step", "learning-rate schedule after the warm-up", choices=("step", "cosine"),
                        source=LDAM_SCHEDULE),
    "warmup_epochs": Setting(5, "linear warm-up epochs, lr * (epoch + 1) / warmup_epochs", low=0, high=100_000,
                             source=LDAM_SCHEDULE),
    "milestones": Setting([0.8, 0.9], "step schedule: fractions of the epochs where the lr drops (160, 180 of 200)",
                          low=0, high=1, source=LDAM_SCHEDULE),
    "lr_factors": Setting([0.01, 0.0001], "step schedule: the lr multiplier from each milestone on", above=0, high=1,
                          source=LDAM_SCHEDULE),
    # eval_every is protocol: top1_bestval (and top1_best, on test) are chosen among the epochs it evaluates
    "eval_every": Setting(1, "epochs between evaluations on test and validation (the last epoch is always evaluated)",
                          low=1,
                          high=100_000, source=f"{LDAM_CODE} validates after every epoch"),
    "crop_padding": Setting(4, "random-crop padding in pixels (CIFAR-sized data)", low=0, high=64,
                            source=LDAM_AUGMENT),
    "flip": Setting(True, "random horizontal flip", source=LDAM_AUGMENT),
    "train_color_jitter": Setting(0.0, "ColorJitter strength on training images (image-file datasets)", low=0,
                                  high=1, source=LDAM_AUGMENT),
    # -- execution: how the same experiment is computed. None of these is part of a paper's
    # protocol; each is recorded in the result row, and the bench measures what they cost.
    # The paper protocols do not fix precision (their code ran fp32 on the GPUs of the day).
    "amp": Setting(True, "bf16 autocast on CUDA", kind=EXECUTION),
    # off by default so that a CPU run's precision does not depend on whether the CPU has bf16 units
    "cpu_amp": Setting(False, "bf16 autocast on CPU", kind=EXECUTION),
    "channels_last": Setting(True, "NHWC activations (faster convolutions on CUDA and oneDNN)", kind=EXECUTION),
    "compile": Setting(False, "torch.compile the backbone: false, true (mode default), or a mode by name",
                       kind=EXECUTION, choices=(False, True, "default", "reduce-overhead", "max-autotune")),
    # both loaders draw the same images in the same order; dataloader is the original codebases'
    # DataLoader + PIL path, kept to check that the fast path changes no result
    "loader": Setting("device", "CIFAR-sized data: batched on the device, or a DataLoader with PIL",
                      kind=EXECUTION, choices=("device", "dataloader")),
    # what a run keeps besides its result: neither changes what it computes
    "save_predictions": Setting(False, "keep each test image's prediction, confidence and top-5 logits "
                                "(predictions.npz) for post-hoc analyses; on in the paper preset", kind=EXECUTION),
    "log_tensorboard": Setting(False, "also write the run's history as TensorBoard events (needs the "
                               "tensorboard package: pip install 'ltbench[tensorboard]')", kind=EXECUTION),
}

# The spec's own fields (RunSpec attributes); the other protocol settings live in spec.params.
SPEC_FIELDS = ("profile", "backbone", "epochs", "batch_size", "n_max")
# Settings of earlier versions that are no longer settings: results written with them are
# read without them (the compiled batch-norm kernel; the many/medium/few rule, now a report option).
RETIRED = ("fused_bn_relu", "mmf_convention")


# ---------------------------------------------------------------------- a two-stage method's stage 2


# The parts of a stage-1 model a stage 2 can train (Stage2Plan.trains):
#   classifier        the method's own parameters (its classifier, or what it learns on the
#                     stage-1 one, as LWS's scales), those it leaves requiring gradients
#   batchnorm_affine  the backbone's BatchNorm weight and bias (the rest of the backbone frozen)
STAGE2_PARTS = ("classifier", "batchnorm_affine")


@dataclass(frozen=True)
class Stage2Plan:
    """How a two-stage method's stage 2 trains on its frozen stage-1 backbone (`Method.stage2`).

    `settings` replaces the spec's trainer settings for stage 2 only (SETTINGS names, each
    checked against its declaration); the other fields are what a stage 2 has that a one-stage
    run has not. Which images a class-balanced draw takes per class is the method's `Draw`'s."""

    epochs: int  # 0: nothing trains; the method calibrates (if it does) and is evaluated
    batch_size: int
    settings: dict = field(default_factory=dict)
    # step the schedule before each epoch's steps, as decoupling's run_networks.py does: epoch
    # e (0-based) of E trains at the lr the schedule gives epoch e + 1, a cosine's last at 0
    lr_step_first: bool = False
    # keep the frozen backbone's BatchNorm in train mode: it normalises with stage 2's batch
    # statistics and its running statistics follow them (classifier-balancing's stage 2)
    bn_train: bool = False
    # what stage 2 trains (STAGE2_PARTS); everything else keeps its stage-1 value
    trains: tuple = ("classifier",)

    def __post_init__(self):
        for name, kind, low in (("epochs", int, 0), ("batch_size", int, 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, kind) or value < low:
                raise ValueError(f"Stage2Plan.{name} must be an int >= {low}, got {value!r}")
        for name in ("lr_step_first", "bn_train"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"Stage2Plan.{name} must be a bool, got {getattr(self, name)!r}")
        if not isinstance(self.trains, tuple) or not self.trains or set(self.trains) - set(STAGE2_PARTS):
            raise ValueError(f"Stage2Plan.trains must be a non-empty tuple of {', '.join(STAGE2_PARTS)}, "
                             f"got {self.trains!r}")
        allowed = {k for k, s in SETTINGS.items() if s.kind == PROTOCOL and k not in SPEC_FIELDS}
        if set(self.settings) - allowed:
            raise ValueError(f"Stage2Plan.settings takes the trainer's protocol settings other than the spec's "
                             f"own fields ({', '.join(SPEC_FIELDS)}): not {sorted(set(self.settings) - allowed)}")
        check_all(SETTINGS, self.settings, "stage 2 ")

    def trainer_params(self, params: dict) -> dict:
        """The trainer's settings for stage 2: the spec's, with this plan's replacing them."""
        return {**params, **self.settings}


def defaults(schema: dict[str, Setting]) -> dict:
    return {name: _copy(s.default) for name, s in schema.items()}


def in_spec(schema: dict[str, Setting], values: dict) -> dict:
    """`values` as a spec records them: less the omit_at_default settings at their default."""
    return {name: value for name, value in values.items()
            if not (schema[name].omit_at_default and value == schema[name].default)}


def check_all(schema: dict[str, Setting], values: dict, where: str = "") -> None:
    for name, value in values.items():
        schema[name].check(f"{where}{name}", value)


def as_settings(declared: dict) -> dict[str, Setting]:
    """A plugin's `hyperparameters`: Settings, or plain default values (typed by their value)."""
    return {name: value if isinstance(value, Setting) else Setting(value) for name, value in declared.items()}


def with_default(setting: Setting, default, source: str | None = None) -> Setting:
    """`setting` with another default (a dataset's paper value), and where that one comes from."""
    return replace(setting, default=default, source=setting.source if source is None else source)


def _copy(value):
    return list(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class Row:
    """One line of `ltbench list --settings`."""

    name: str
    kind: str
    type: str
    default: str
    allowed: str
    help: str
    owner: str = field(default="trainer")


def listing(method_schemas: dict[str, dict[str, Setting]]) -> list[Row]:
    rows = [Row(name, s.kind, s.type_name(), show_value(s.default), s.describe_allowed(), s.help)
            for name, s in SETTINGS.items()]
    for method, schema in method_schemas.items():
        rows += [Row(f"{method}.{name}", s.kind, s.type_name(), show_value(s.default), s.describe_allowed(), s.help, method)
                 for name, s in schema.items()]
    return rows


# ---------------------------------------------------------------------- settings together
#
# What no setting's own range can say: rules between settings (a trainer setting and another,
# or a method's hyperparameter and a trainer setting). ltbench.sweep.resolve checks them on
# every spec it resolves where the sweep changed one of their settings from what its preset
# gives; a preset's own combinations are the preset's to keep.


@dataclass(frozen=True)
class Relation:
    """A rule over the settings `names`, checked on every run that has them all.

    `holds` takes {name: value} and says whether the run can be trained so; `problem` says
    what is wrong otherwise, and `fix` gives the change that would make it hold (the hint),
    from the values and {name: the name --set takes, e.g. ldam_drw.drw_start}."""

    names: tuple[str, ...]
    holds: Callable[[dict], bool]
    problem: str
    fix: Callable[[dict, dict], str]


def epoch_of(fraction: float, epochs: int) -> int:
    """The 0-based epoch a fraction of the run starts at, rounded as the trainer rounds its
    milestones and the DRW methods their start (methods/common.py drw_start_epoch)."""
    return round(fraction * epochs)


def _warmup_fix(v: dict, key: dict) -> str:
    return (f"--set {key['warmup_epochs']}={min(5, v['epochs'] - 1)} (fewer warm-up epochs than the "
            f"{v['epochs']} of the run), or --epochs above {v['warmup_epochs']}")


def _drw_fix(v: dict, key: dict) -> str:
    latest = (v["epochs"] - 1) / v["epochs"]
    return f"--set {key['drw_start']}={latest:.3g} or lower (at most, re-weighting the last epoch), or more --epochs"


RELATIONS = (
    Relation(("warmup_epochs", "epochs"), lambda v: v["warmup_epochs"] < v["epochs"],
             "the warm-up must end before the last epoch, or the run never reaches its learning-rate schedule",
             _warmup_fix),
    Relation(("milestones", "lr_factors"), lambda v: len(v["milestones"]) == len(v["lr_factors"]),
             "milestones and lr_factors must have the same length (one lr factor from each milestone on)",
             lambda v, key: f"e.g. --set {key['milestones']}=0.8,0.9 --set {key['lr_factors']}=0.01,0.0001"),
    Relation(("milestones",), lambda v: all(a < b for a, b in zip(v["milestones"], v["milestones"][1:])),
             "milestones must increase: each is the fraction of the epochs where the lr drops next",
             lambda v, key: f"--set {key['milestones']}={show_value(sorted(set(v['milestones'])))}"),
    Relation(("drw_start", "epochs"), lambda v: epoch_of(v["drw_start"], v["epochs"]) < v["epochs"],
             "re-weighting would start after the last epoch, that is never", _drw_fix),
)


def check_relations(values: dict, changed: set[str], owner: str | None = None) -> None:
    """A UserError naming the settings, their values and the fix, for the first relation
    that does not hold among those whose settings are all in `values` and one in `changed`.
    `owner`: the method whose hyperparameters `values` holds beside the trainer's settings."""
    for relation in RELATIONS:
        if not set(relation.names) <= set(values) or not set(relation.names) & changed:
            continue
        v = {name: values[name] for name in relation.names}
        if relation.holds(v):
            continue
        key = {name: name if owner is None or name in SETTINGS else f"{owner}.{name}" for name in v}
        shown = " with ".join(f"{key[name]}={show_value(value)}" for name, value in v.items())
        raise UserError(f"{shown}: {relation.problem}", hint=relation.fix(v, key))
