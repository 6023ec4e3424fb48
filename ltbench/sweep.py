"""From what the user asked for (flags, --set, a TOML file) to the list of RunSpecs.

Values resolve in this order, later wins: trainer defaults < the method's paper defaults
< the preset < the config file < command-line flags and --set. A spec whose values differ
from what its preset alone gives is labelled `custom`, so reports never compare it with
the published protocol.
"""

import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ltbench import registry
from ltbench.data.profiles import PROFILES, check_imbalance_factor
from ltbench.errors import UserError, unknown_name
from ltbench.models import check_backbone
from ltbench.presets import preset_values
from ltbench.spec import RunSpec
from ltbench.train import TRAINER_DEFAULTS

SPEC_FIELDS = {"profile": "exp", "backbone": "resnet32_cifar", "epochs": 200, "batch_size": 128, "n_max": 0}
CHOICES = {"profile": PROFILES, "schedule": ("step", "cosine"), "mmf_convention": ("cb", "oltr"),
           "loader": ("device", "dataloader"),
           "compile": (False, True, "default", "reduce-overhead", "max-autotune")}


@dataclass
class Sweep:
    methods: list[str]
    datasets: list[str]
    imbalance_factors: list[float]
    seeds: list[int] = field(default_factory=lambda: [0])
    preset: str = "paper"
    # key -> value; "method.key" applies to that method only
    overrides: dict = field(default_factory=dict)


def expand(sweep: Sweep) -> list[RunSpec]:
    for name in sweep.methods:
        registry.method(name)
    for name in sweep.datasets:
        registry.dataset(name)
    factors = [check_imbalance_factor(f) for f in sweep.imbalance_factors]
    _check_override_keys(sweep)
    specs = [
        resolve(m, d, f, s, sweep.preset, sweep.overrides)
        for m, d in itertools.product(sweep.methods, sweep.datasets)
        for f in imbalance_factors_of(registry.dataset(d), factors)
        for s in sweep.seeds
    ]
    return list({spec.run_id: spec for spec in specs}.values())


def imbalance_factors_of(ds, factors: list[float]) -> list[float]:
    """The imbalance factors a sweep runs on one dataset. A dataset published with its split
    has one, which --if may name or leave out."""
    fixed = ds.fixed_imbalance_factor
    if fixed is None:
        if not factors:
            raise UserError(f"--if not given for {ds.name}", hint="e.g. --if 10,50,100")
        return factors
    if any(f != fixed for f in factors):
        raise UserError(f"{ds.name} comes with its long-tailed split (IF {fixed:g}); --if cannot change it",
                        hint=f"leave --if out for {ds.name} (or give {fixed:g}); --n-max caps every class to run "
                        "a reduced set")
    return [fixed]


def resolve(method: str, dataset: str, imbalance_factor: float, seed: int, preset: str, overrides: dict) -> RunSpec:
    method_cls, ds = registry.method(method), registry.dataset(dataset)
    # a dataset's own protocol (ImageNet-LT's backbone, epochs, lr, ...) sits under the
    # method's defaults, as the trainer's CIFAR defaults do
    base = {**SPEC_FIELDS, "n_max": None, **TRAINER_DEFAULTS, **ds.protocol, **method_cls.dataset_defaults(ds)}
    pure = {**base, **preset_values(preset, ds)}
    if pure["batch_size"] != base["batch_size"]:
        # a preset shrinks the protocol, not its recipe: the linear scaling rule (Goyal et al.
        # 2017) keeps the step per image, e.g. lr 0.5 at batch 512 -> 0.125 at batch 128
        pure["lr"] = base["lr"] * pure["batch_size"] / base["batch_size"]
    values = dict(pure)
    for key, raw in _overrides_for(method, overrides).items():
        if key in values:
            values[key] = coerce(key, raw, values[key] if values[key] is not None else SPEC_FIELDS.get(key))
    _validate(values)
    method_cls.check(values)
    spec_values = {k: values.pop(k) for k in SPEC_FIELDS}
    label = preset if values == {k: v for k, v in pure.items() if k not in SPEC_FIELDS} and all(
        spec_values[k] == pure[k] for k in SPEC_FIELDS) else "custom"
    return RunSpec(method=method, dataset=dataset, imbalance_factor=float(imbalance_factor), seed=int(seed),
                   preset=label, params=values, **spec_values)


def _overrides_for(method: str, overrides: dict) -> dict:
    shared = {k: v for k, v in overrides.items() if "." not in k}
    own = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith(f"{method}.")}
    return {**shared, **own}


def _check_override_keys(sweep: Sweep) -> None:
    """A key no method of the sweep uses is almost always a typo: refuse it."""
    shared = set(SPEC_FIELDS) | set(TRAINER_DEFAULTS) | {k for d in sweep.datasets for k in registry.dataset(d).protocol}
    keys_of = {name: shared | set(registry.method(name).defaults("cifar")) for name in sweep.methods}
    for key in sweep.overrides:
        method, _, own_key = key.rpartition(".")
        if method and method not in keys_of:
            raise UserError(f"--set {key}: method '{method}' is not in this sweep",
                            hint=f"methods in the sweep: {', '.join(sweep.methods)}")
        usable = keys_of[method] if method else set().union(*keys_of.values())
        if own_key not in usable:
            raise unknown_name(f"--set key for {method}" if method else "--set key", own_key, sorted(usable))


def _boolean(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def coerce(key: str, value, default):
    """Parse a --set string (or a TOML value) to the type of the default it replaces."""
    try:
        if isinstance(default, bool):
            return _boolean(value)
        if isinstance(default, int):
            number = float(value)
            if number != int(number):
                raise ValueError
            return int(number)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, list):
            items = value if isinstance(value, list) else [v for v in str(value).split(",") if v.strip()]
            return [coerce(key, v, default[0]) if default else v for v in items]
        return str(value)
    except (TypeError, ValueError):
        if key in CHOICES:
            # a named choice where the default has another type (compile=reduce-overhead,
            # default false); _validate names the allowed ones
            return str(value)
        kind = type(default).__name__ if not isinstance(default, list) else "comma list"
        raise UserError(f"--set {key}={value}: expected a {kind} (default {default!r})") from None


def _validate(values: dict) -> None:
    for key, allowed in CHOICES.items():
        if values[key] not in allowed:
            raise UserError(f"{key} '{values[key]}' is not allowed",
                            hint=f"use one of: {', '.join(str(a).lower() if isinstance(a, bool) else a for a in allowed)}")
    for key in ("epochs", "batch_size", "eval_every"):
        if values[key] < 1:
            raise UserError(f"{key} must be at least 1, got {values[key]}")
    if values["n_max"] is not None and values["n_max"] < 1:
        raise UserError(f"n_max must be at least 1, got {values['n_max']}")
    if values.get("image_size", 224) < 8:
        raise UserError(f"image_size must be at least 8 pixels, got {values['image_size']}")
    if len(values["milestones"]) != len(values["lr_factors"]):
        raise UserError("milestones and lr_factors must have the same length",
                        hint="e.g. --set milestones=0.8,0.9 --set lr_factors=0.01,0.0001")
    check_backbone(values["backbone"])


# ------------------------------------------------------------------ config files

CONFIG_KEYS = {"methods", "datasets", "dataset", "imbalance_factors", "if", "seeds", "preset", "profile",
               "backbone", "epochs", "batch_size", "n_max", "results_dir", "device", "set", "data_root", "data"}


def read_config(path) -> dict:
    """A TOML sweep file with the same keys as the command line; `[set]` holds --set values
    (a sub-table `[set.focal]` applies to one method); `[data.imagenet_lt]` says where a
    dataset's files are (ltbench.data.image_datasets)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = set(data) - CONFIG_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise unknown_name(f"config key (in {path})", key, sorted(CONFIG_KEYS))
    overrides = {}
    for key, value in data.get("set", {}).items():
        if isinstance(value, dict):
            overrides.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            overrides[key] = value
    data["set"] = overrides
    return data
