"""A sweep as `ltbench run` is asked for it: its flags merged over its sweep file
(ltbench.sweep.read_config), into the Sweep to expand, where it runs and the RunContext its
runs carry.

Flags win over the file, the file over the defaults. `data_root_of` is the one place that
reads $LTBENCH_DATA, for `run`, `split`, `bench` and `fetch-data`; nothing below the command
line reads the environment.
"""

import os
from pathlib import Path

from ltbench import registry
from ltbench.data.image_datasets import check_dataset_options
from ltbench.data.sources import data_root
from ltbench.errors import UserError
from ltbench.run_context import RunContext
from ltbench.settings import SPEC_FIELDS
from ltbench.sweep import FileValue, Sweep, read_config
from ltbench.tag import check_tag

# Options of the sweep itself (not of its runs: those are ltbench.settings)
DEFAULTS = {"preset": "paper", "seeds": ["0"], "results_dir": "results", "device": "auto"}
DATA_ENV = "LTBENCH_DATA"
# numpy's seeds (np.random.RandomState, SeedSequence) are 0 .. 2**32 - 1; torch takes them too
SEED_LIMIT = 2**32


def data_root_of(given=None) -> Path:
    """The data root a command works on: `given` (--data-root, a sweep file's data_root), else
    $LTBENCH_DATA, else ~/.cache/ltbench/data; absolute, since jobs start elsewhere."""
    return data_root(given or os.environ.get(DATA_ENV)).resolve()


def sweep_from_args(args) -> tuple[Sweep, dict]:
    """The Sweep, and where it runs: results_dir, device, jobs, devices and the runs' context."""
    config = read_config(args.config) if args.config is not None else {}

    def pick(flag, *config_keys):
        value = getattr(args, flag, None)
        if value not in (None, []):
            return value
        for key in config_keys:
            if key in config:
                return config[key] if isinstance(config[key], list) or key not in ("datasets", "dataset") else [config[key]]
        return DEFAULTS.get(flag)

    methods = pick("methods", "methods")
    datasets = pick("datasets", "datasets", "dataset")
    factors = pick("imbalance_factors", "imbalance_factors", "if")
    # datasets published with their split have their own imbalance factor
    fixed_only = bool(datasets) and all(registry.dataset(d).fixed_imbalance_factor is not None for d in datasets)
    missing = [flag for flag, value in (("--methods", methods), ("--dataset", datasets), ("--if", factors or fixed_only))
               if not value]
    if missing:
        raise UserError(f"{', '.join(missing)} not given", hint="e.g. ltbench run --methods ce,focal "
                        "--dataset fashion_mnist_lt --if 10,100 (or put them in a --config file)")
    # a file's values keep their TOML types; the flags' are text, parsed by each setting
    overrides = {key: FileValue(value, args.config) for key, value in config.get("set", {}).items()}
    for key in SPEC_FIELDS:
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
        elif config.get(key) is not None:
            overrides[key] = FileValue(config[key], args.config)
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set '{item}' is not KEY=VALUE", hint="e.g. --set lr=0.05 or --set focal.gamma=2")
        overrides[key.strip()] = value.strip()
    seeds = [parse_seed(s) for s in pick("seeds", "seeds")]
    sweep = Sweep(methods=list(methods), datasets=list(datasets), imbalance_factors=list(factors or []), seeds=seeds,
                  preset=pick("preset", "preset"), overrides=overrides)
    where = {key: pick(key, key) for key in ("results_dir", "device", "jobs", "devices")}
    if not isinstance(where["results_dir"], str) or not where["results_dir"].strip():
        raise UserError(f"the results dir is {where['results_dir']!r}, not a folder name",
                        hint="pass --results-dir DIR (default: results)")
    check_device_name(where["device"])
    tag = pick("tag", "tag")
    where["context"] = RunContext(
        data_root=data_root_of(getattr(args, "data_root", None) or config.get("data_root")),
        data_options=data_options_from(config.get("data", {}), getattr(args, "data_options", []) or []),
        tag="" if tag is None else check_tag(tag))
    return sweep, where


def parse_seed(value) -> int:
    """A seed as typed or as a config file gives it: a whole number in numpy's seed range."""
    if isinstance(value, bool):
        seed = None
    elif isinstance(value, int):
        seed = value
    elif isinstance(value, float):
        seed = int(value) if value.is_integer() else None
    else:
        text = str(value).strip()
        seed = int(text) if text.removeprefix("-").removeprefix("+").isdigit() else None
    if seed is None:
        raise UserError(f"seed '{value}' is not an integer", hint="e.g. --seeds 0,1,2")
    if not 0 <= seed < SEED_LIMIT:
        raise UserError(f"seed {value} is out of range: a seed must be >= 0 and < 2**32 ({SEED_LIMIT}, numpy's "
                        "seed range)", hint="e.g. --seeds 0,1,2")
    return seed


def check_device_name(device) -> None:
    if device in ("auto", "cpu", "cuda") or (isinstance(device, str) and device.startswith("cuda:")
                                               and device[5:].isdigit()):
        return
    raise UserError(f"unknown device {device!r}", hint="use auto, cpu, cuda or cuda:N")


def data_options_from(table: dict, flags: list[str]) -> dict:
    """{dataset: {key: value}}: the config's [data.<name>] tables, then --data-option flags."""
    options = {name: dict(values) if isinstance(values, dict) else values for name, values in table.items()}
    for item in flags:
        key, sep, value = item.partition("=")
        name, dot, option = key.strip().partition(".")
        if not sep or not dot or not option:
            raise UserError(f"--data-option '{item}' is not DATASET.KEY=VALUE",
                            hint="e.g. --data-option imagenet_lt.image_root=/datasets/imagenet")
        options.setdefault(name, {})[option] = value.strip()
    check_dataset_options(options)
    return options
