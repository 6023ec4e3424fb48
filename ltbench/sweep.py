"""From what the user asked for (flags, --set, a TOML file) to the list of RunSpecs.

Values resolve in this order, later wins: the settings' defaults (ltbench.settings) < the
dataset's protocol < the method's paper defaults < the preset < the config file < command-line
flags and --set. A spec whose protocol values differ from what its preset alone gives is
labelled `custom`, so reports never compare it with the published protocol; execution
settings never change the label or the run id.
"""

import copy
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ltbench import registry
from ltbench.data.profiles import check_imbalance_factor
from ltbench.errors import UserError, unknown_name
from ltbench.models import check_backbone
from ltbench.presets import PRESETS, preset_values, protocol_base
from ltbench.settings import EXECUTION, SETTINGS, SPEC_FIELDS, Setting, as_settings, check_all, defaults
from ltbench.spec import RunSpec

TRAINER = "trainer"  # the owner of a --set key that is one of ltbench.settings.SETTINGS


@dataclass
class Sweep:
    methods: list[str]
    datasets: list[str]
    imbalance_factors: list[float]
    seeds: list[int] = field(default_factory=lambda: [0])
    preset: str = "paper"
    # --set keys as typed -> raw values; "method.key" applies to that method's runs only
    overrides: dict = field(default_factory=dict)


def expand(sweep: Sweep) -> list[RunSpec]:
    for name in sweep.methods:
        registry.method(name)
    for name in sweep.datasets:
        registry.dataset(name)
    if sweep.preset not in PRESETS:
        raise UserError(f"unknown preset '{sweep.preset}'", hint=f"use one of: {', '.join(PRESETS)}")
    factors = [check_imbalance_factor(f) for f in sweep.imbalance_factors]
    routed = route_overrides(sweep.methods, sweep.overrides)
    # seed 0 of every cell before seed 1 of any, methods side by side within a cell: a sweep
    # stopped half-way already compares every method
    specs = [
        resolve(m, d, f, s, sweep.preset, routed.get(m, {}))
        for s in sweep.seeds
        for d in sweep.datasets
        for f in imbalance_factors_of(registry.dataset(d), factors)
        for m in sweep.methods
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


# ---------------------------------------------------------------------- --set keys


def route_overrides(methods: list[str], overrides: dict) -> dict[str, dict]:
    """{method: {(owner, key): raw}}: which setting every --set key means for each method of
    the sweep. The owner is TRAINER or the method (or stage-1 method) whose hyperparameter it is.

    `KEY` is a trainer setting, or the hyperparameter of the one method of the sweep that has
    it; where several have it, it is refused with the candidates named. `METHOD.KEY` applies
    to METHOD's runs only."""
    owners_of = {m: _hyperparameter_owners(m) for m in methods}
    routed = {m: {} for m in methods}
    for typed, raw in overrides.items():
        method, _, key = typed.rpartition(".")
        if method:
            if method not in routed:
                raise UserError(f"--set {typed}: method '{method}' is not in this sweep",
                                hint=f"methods in the sweep: {', '.join(methods)}")
            owner = _owner_for(method, key, owners_of[method])
            routed[method][(owner, key)] = raw
            continue
        if key in SETTINGS:
            for m in methods:
                routed[m][(TRAINER, key)] = raw
            continue
        owners = sorted({owner for m in methods for owner in owners_of[m].get(key, [])})
        if not owners:
            known = sorted(set(SETTINGS) | {k for m in methods for k in owners_of[m]})
            raise unknown_name("--set key", key, known)
        # several methods may share one setting (declared once, e.g. by a common base class);
        # settings that only share a name are told apart by the method's name
        declared = {owner: as_settings(registry.method(owner).hyperparameters)[key] for owner in owners}
        if len(owners) > 1 and any(d != declared[owners[0]] for d in declared.values()):
            raise UserError(f"--set {key} is ambiguous: {', '.join(f'{o}.{key}' for o in owners)} all have it",
                            hint=f"name the method, e.g. --set {owners[0]}.{key}={raw}")
        for m in methods:
            for owner in owners_of[m].get(key, []):
                routed[m][(owner, key)] = raw
    return routed


def _hyperparameter_owners(method: str) -> dict[str, list[str]]:
    """key -> the methods of `method`'s chain (itself, its stage 1) that own a hyperparameter of that name."""
    owners = {}
    for cls in registry.method(method).chain():
        for key in cls.hyperparameters:
            owners.setdefault(key, []).append(cls.name)
    return owners


def _owner_for(method: str, key: str, owners: dict[str, list[str]]) -> str:
    if key in owners:
        return owners[key][-1]  # the method's own before its stage 1's
    if key in SETTINGS:
        return TRAINER
    raise unknown_name(f"--set key for {method}", key, sorted(set(SETTINGS) | set(owners)))


# ---------------------------------------------------------------------- one spec


def schemas_for(method: str, dataset: str) -> dict[str, dict[str, Setting]]:
    """{owner: {key: Setting}} for a run of `method` on `dataset`: the trainer's and each
    method of its chain's, with the defaults that dataset's paper protocol gives them."""
    ds = registry.dataset(dataset)
    return {TRAINER: SETTINGS, **{cls.name: cls.settings(ds) for cls in registry.method(method).chain()}}


def resolve(method: str, dataset: str, imbalance_factor: float, seed: int, preset: str,
            overrides: dict | None = None) -> RunSpec:
    """The spec of one run. `overrides` maps (owner, key) to raw values (route_overrides), or
    plain keys to values for a single method."""
    method_cls, ds = registry.method(method), registry.dataset(dataset)
    schemas = schemas_for(method, dataset)
    base = protocol_base(method_cls, ds)
    pure = {**base, **preset_values(preset, ds, base)}
    if pure["batch_size"] != base["batch_size"]:
        # a preset shrinks the protocol, not its recipe: the linear scaling rule (Goyal et al.
        # 2017) keeps the step per image, e.g. lr 0.5 at batch 512 -> 0.125 at batch 128
        pure["lr"] = base["lr"] * pure["batch_size"] / base["batch_size"]
    pure_hp = {owner: defaults(schema) for owner, schema in schemas.items() if owner != TRAINER}
    values, hp = dict(pure), copy.deepcopy(pure_hp)
    for (owner, key), raw in _as_routed(method, overrides or {}).items():
        if owner == TRAINER:
            values[key] = SETTINGS[key].coerce(key, raw)
        else:
            hp[owner][key] = schemas[owner][key].coerce(f"{owner}.{key}", raw)
    check_all(SETTINGS, values)
    _check_combinations(values)
    for owner, own in hp.items():
        check_all(schemas[owner], own, f"{owner}.")
        registry.method(owner).check(own)
    execution = {k: values.pop(k) for k in list(values) if SETTINGS[k].kind == EXECUTION}
    for k in execution:
        pure.pop(k)
    spec_values = {k: values.pop(k) for k in SPEC_FIELDS}
    same = values == {k: v for k, v in pure.items() if k not in SPEC_FIELDS} and hp == pure_hp and all(
        spec_values[k] == pure[k] for k in SPEC_FIELDS)
    # a paper preset whose protocol on this dataset is not confirmed is not called paper
    same = same and (preset != "paper" or method_cls.paper_protocol_confirmed(ds))
    return RunSpec(method=method, dataset=dataset, imbalance_factor=float(imbalance_factor), seed=int(seed),
                   preset=preset if same else "custom", params=values, hyperparameters=hp, execution=execution,
                   **spec_values)


def _as_routed(method: str, overrides: dict) -> dict:
    if all(isinstance(k, tuple) for k in overrides):
        return overrides
    return route_overrides([method], overrides)[method]


def _check_combinations(values: dict) -> None:
    if len(values["milestones"]) != len(values["lr_factors"]):
        raise UserError("milestones and lr_factors must have the same length",
                        hint="e.g. --set milestones=0.8,0.9 --set lr_factors=0.01,0.0001")
    check_backbone(values["backbone"])


def preset_label(spec: RunSpec) -> str:
    """The preset whose values `spec` has (as `ltbench run` would label it), else custom."""
    for name in PRESETS:
        if resolve(spec.method, spec.dataset, spec.imbalance_factor, spec.seed, name).run_id == spec.run_id:
            return name
    return "custom"


# ------------------------------------------------------------------ config files

CONFIG_KEYS = {"methods", "datasets", "dataset", "imbalance_factors", "if", "seeds", "preset", "profile",
               "backbone", "epochs", "batch_size", "n_max", "results_dir", "device", "set", "data_root", "data", "tag",
               "jobs", "devices"}  # jobs and devices: the local launcher's (--jobs, --devices)
LIST_KEYS = ("methods", "datasets", "dataset", "imbalance_factors", "if", "seeds", "devices")


def read_config(path) -> dict:
    """A TOML sweep file with the same keys as the command line; `[set]` holds --set values
    (a sub-table `[set.focal]` applies to one method); `[data.imagenet_lt]` says where a
    dataset's files are (ltbench.data.image_datasets). Lists may be TOML arrays or comma strings."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"config file {path} is a directory", hint="pass a TOML file, e.g. --config sweep.toml") from None
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not a text file", hint="pass a TOML file, e.g. --config sweep.toml") from None
    except OSError as exc:
        raise UserError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = set(data) - CONFIG_KEYS
    if unknown:
        raise unknown_name(f"config key (in {path})", sorted(unknown)[0], sorted(CONFIG_KEYS))
    for key in LIST_KEYS:
        if key in data:
            data[key] = _config_list(path, key, data[key])
    for key in ("set", "data"):
        if not isinstance(data.get(key, {}), dict):
            raise UserError(f"config file {path}: `{key}` must be a table, got {type(data[key]).__name__}",
                            hint=f"write it as [{key}] followed by KEY = VALUE lines")
    overrides = {}
    for key, value in data.get("set", {}).items():
        if isinstance(value, dict):
            overrides.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            overrides[key] = value
    data["set"] = overrides
    for name, options in data.get("data", {}).items():
        if not isinstance(options, dict):
            raise UserError(f"config file {path}: [data.{name}] must be a table of paths, got {options!r}",
                            hint=f'e.g. [data.{name}] then image_root = "/datasets/..."')
    return data


def _config_list(path, key: str, value) -> list:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
        return value
    raise UserError(f"config file {path}: `{key}` must be a list (or a comma string), got {value!r}",
                    hint=f'e.g. {key} = ["a", "b"] or {key} = "a,b"')
