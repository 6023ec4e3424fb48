"""From what the user asked for (flags, --set, a TOML file) to the list of RunSpecs.

Values resolve in this order, later wins: the settings' defaults (ltbench.settings) < the
dataset's protocol < the method's paper defaults < the preset < the config file < command-line
flags and --set. A spec whose protocol values differ from what its preset alone gives is
labelled `custom`, so reports never compare it with the published protocol; execution
settings never change the label or the run id.
"""

import copy
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ltbench import registry
from ltbench.data.profiles import check_imbalance_factor
from ltbench.errors import UserError, unknown_name
from ltbench.models import check_backbone
from ltbench.presets import PRESETS, preset_values, protocol_base
from ltbench.settings import (
    EXECUTION, SETTINGS, SPEC_FIELDS, UNSET_WORDS, Setting, as_settings, check_all, check_relations, defaults, in_spec,
    show_value,
)
from ltbench.spec import RunSpec
from ltbench.teacher import with_teacher_run_id

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
    to METHOD's runs only; where METHOD is the stage 1 of methods of the sweep (`--methods gcl
    --set gcl_stage1.batch_mix=none`), to their stage 1, whose hyperparameter it is."""
    owners_of = {m: _hyperparameter_owners(m) for m in methods}
    routed = {m: {} for m in methods}
    for typed, raw in overrides.items():
        method, _, key = typed.rpartition(".")
        if method:
            if method not in routed:
                for user in _stage1_users(method, key, methods, owners_of):
                    routed[user][(method, key)] = raw
                continue
            owner = _owner_for(method, key, owners_of[method])
            routed[method][(owner, key)] = raw
            continue
        if key in SETTINGS:
            for m in methods:
                routed[m][(TRAINER, key)] = raw
            continue
        owners = sorted({owner for m in methods for owner in owners_of[m].get(key, [])})
        if not owners:
            raise _not_in_sweep(typed, key, methods) or unknown_name(
                "--set key", key, sorted(set(SETTINGS) | {k for m in methods for k in owners_of[m]}))
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


def _stage1_users(stage1: str, key: str, methods: list[str], owners_of: dict) -> list[str]:
    """The methods of the sweep whose chain has `stage1` before them, for `--set STAGE1.KEY`;
    KEY must be that stage 1's own hyperparameter (its trainer settings are the run's own)."""
    users = [m for m in methods if stage1 in owners_of[m].get(key, []) and stage1 != m]
    if users:
        return users
    if any(stage1 in {c.name for c in registry.method(m).chain()} for m in methods):
        raise _not_in_sweep(f"{stage1}.{key}", key, [stage1]) or unknown_name(
            f"--set key for {stage1}", key, sorted(as_settings(registry.method(stage1).hyperparameters)))
    raise UserError(f"--set {stage1}.{key}: method '{stage1}' is not in this sweep, nor a stage 1 of one",
                    hint=f"methods in the sweep: {', '.join(methods)}")


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
    raise _not_in_sweep(f"{method}.{key}", key, [method]) or unknown_name(
        f"--set key for {method}", key, sorted(set(SETTINGS) | set(owners)))


def _not_in_sweep(typed: str, key: str, methods: list[str]) -> UserError | None:
    """For a key that only methods outside the sweep have: an error naming them and their
    setting (a spelling suggestion would point at an unrelated setting: gamma -> amp)."""
    having = [name for name, cls in registry.methods().items() if key in cls.hyperparameters]
    if not having:
        return None
    who = f"{methods[0]} has" if len(methods) == 1 else f"none of this sweep's methods ({', '.join(methods)}) has"
    return UserError(f"--set {typed}: {who} no setting {key}; it is {', '.join(f'{m}.{key}' for m in having)}",
                     hint=f"add {' or '.join(having)} to --methods to set it there, e.g. --methods "
                     f"{','.join([*methods, having[0]])} --set {having[0]}.{key}=..., or leave it out")


# ---------------------------------------------------------------------- one spec


def schemas_for(method: str, dataset: str) -> dict[str, dict[str, Setting]]:
    """{owner: {key: Setting}} for a run of `method` on `dataset`: the trainer's and each
    method of its chain's, with the defaults that dataset's paper protocol gives them."""
    ds = registry.dataset(dataset)
    return {TRAINER: SETTINGS, **{cls.name: cls.settings(ds) for cls in registry.method(method).chain()}}


def resolve(method: str, dataset: str, imbalance_factor: float, seed: int, preset: str,
            overrides: dict | None = None, with_teacher: bool = True) -> RunSpec:
    """The spec of one run. `overrides` maps (owner, key) to raw values (route_overrides), or
    plain keys to values for a single method. A method that distils names its teacher's run
    id among its hyperparameters (ltbench.teacher); `with_teacher=False` leaves it out."""
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
            values[key] = coerce(SETTINGS[key], key, raw)
        else:
            hp[owner][key] = coerce(schemas[owner][key], f"{owner}.{key}", raw)
    check_all(SETTINGS, values)
    check_backbone(values["backbone"])
    method_cls.check_backbone(values["backbone"])
    changed = {k for k in values if values[k] != pure[k]}
    check_relations(values, changed)
    for owner, own in hp.items():
        check_all(schemas[owner], own, f"{owner}.")
        check_relations({**values, **own}, changed | {k for k in own if own[k] != pure_hp[owner][k]}, owner)
        registry.method(owner).check(own)
    hp, pure_hp = ({owner: in_spec(schemas[owner], own) for owner, own in d.items()} for d in (hp, pure_hp))
    execution = {k: values.pop(k) for k in list(values) if SETTINGS[k].kind == EXECUTION}
    for k in execution:
        pure.pop(k)
    spec_values = {k: values.pop(k) for k in SPEC_FIELDS}
    same = values == {k: v for k, v in pure.items() if k not in SPEC_FIELDS} and hp == pure_hp and all(
        spec_values[k] == pure[k] for k in SPEC_FIELDS)
    # a paper preset whose protocol on this dataset is not confirmed is not called paper
    same = same and (preset != "paper" or method_cls.paper_protocol_confirmed(ds))
    spec = RunSpec(method=method, dataset=dataset, imbalance_factor=float(imbalance_factor), seed=int(seed),
                   preset=preset if same else "custom", params=values, hyperparameters=hp, execution=execution,
                   **spec_values)
    return with_teacher_run_id(spec) if with_teacher else spec


@dataclass(frozen=True)
class FileValue:
    """A setting as a sweep file gives it, typed by TOML: `epochs = "2"` there is text, not
    the number 2 (the text of --set epochs=2 is parsed; a file's value keeps its type)."""

    value: object
    path: str

    def __str__(self) -> str:
        return show_value(self.value)


def coerce(setting: Setting, name: str, raw):
    """A --set text, a sweep file's value (FileValue) or a Python value as `setting`'s type."""
    if isinstance(raw, FileValue):
        _check_file_type(setting, name, raw)
        raw = raw.value
    return setting.coerce(name, raw)


def _check_file_type(setting: Setting, name: str, given: FileValue) -> None:
    """Text is refused where a number, a switch or a list is meant, as any other wrong type is."""
    value, kind = given.value, setting.value_type
    if setting.choices is not None or (setting.optional and isinstance(value, str)
                                       and value.strip().lower() in UNSET_WORDS):
        return  # a choice is matched by its value or its name; TOML has no word for unset but these
    if kind is list:
        text = isinstance(value, str) or (isinstance(value, list) and setting.list_item_type is not str
                                          and any(isinstance(item, str) for item in value))
    else:
        text = isinstance(value, str) and kind is not str
    if text:
        try:  # the value the text means, as TOML writes it, where it means one
            example = json.dumps(setting.coerce(name, value))
        except UserError:
            example = json.dumps(setting.default) if setting.default is not None else "100"
        raise UserError(f"{name}={json.dumps(value)} in {given.path} is text (a TOML string); {name} takes a "
                        f"value of type {setting.type_name()} (default {show_value(setting.default)})",
                        hint=f"write the value it means, without quotes: {name.rpartition('.')[2]} = {example}")


def _as_routed(method: str, overrides: dict) -> dict:
    if all(isinstance(k, tuple) for k in overrides):
        return overrides
    return route_overrides([method], overrides)[method]


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
