"""What each Slurm job asks for: command-line flags over a `[slurm]` TOML table over defaults.

Everything cluster-specific (partition, account, QOS, setup commands) comes from here, never
from code. The config file is `--slurm-config FILE`, else $LTBENCH_SLURM_CONFIG, e.g.

    [slurm]
    partition = "gpu"
    account = "my-project"
    time = 240                     # minutes per job; a timed-out job is requeued and resumes
    gpus = 1                       # per node; a run on several GPUs has one task (process) per GPU
    nodes = 1                      # more nodes: one data-parallel run over all their GPUs
    cpus = 8                       # per task
    mem = "32G"
    array_parallelism = 16
    setup = ["source ~/venvs/ltbench/bin/activate"]
    extra = { constraint = "a100", "mail-type" = "FAIL" }
"""

import argparse
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from ltbench.errors import UserError, unknown_name

CONFIG_ENV = "LTBENCH_SLURM_CONFIG"
# torch otherwise starts one thread per core of the whole node, however few CPUs the job
# was given, and jobs sharing a node slow each other down many times over. A user's own
# setup lines come after this one, so they can still choose otherwise.
MATCH_THREADS_TO_CPUS = "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}"
MEMORY = re.compile(r"^\d+(\.\d+)?[KMGT]?B?$", re.IGNORECASE)


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None  # None: the cluster's default partition
    account: str | None = None
    qos: str | None = None
    time: int = 120  # minutes
    gpus: int | None = None  # per node
    cpus: int | None = None  # per task
    nodes: int = 1
    tasks_per_node: int | None = None  # None: one per GPU (1 without GPUs); each task is one rank of the run
    mem: str | None = None  # Slurm's --mem syntax: 16G, 4000M
    array_parallelism: int = 64
    extra: dict[str, str] = field(default_factory=dict)  # any other #SBATCH option
    setup: list[str] = field(default_factory=list)  # shell lines run before each job
    wait: bool = False

    def executor_parameters(self) -> dict:
        """The same options in submitit AutoExecutor's vocabulary (None means not set)."""
        return {
            "name": "ltbench",
            "timeout_min": self.time,
            "nodes": self.nodes,
            "tasks_per_node": self.tasks,
            "gpus_per_node": self.gpus,
            "cpus_per_task": self.cpus,
            "slurm_partition": self.partition,
            "slurm_account": self.account,
            "slurm_qos": self.qos,
            "slurm_mem": self.mem,
            "slurm_array_parallelism": self.array_parallelism,
            "slurm_additional_parameters": dict(self.extra) or None,
            "slurm_setup": [MATCH_THREADS_TO_CPUS, *self.setup],
            # a rank that fails must not leave the others waiting for it in a collective
            "slurm_srun_args": ["--kill-on-bad-exit=1"] if self.nodes * self.tasks > 1 else None,
        }

    @property
    def tasks(self) -> int:
        """Tasks per node: one process per GPU unless said otherwise."""
        return self.tasks_per_node or max(1, self.gpus or 1)


TYPES = {"partition": str, "account": str, "qos": str, "time": int, "gpus": int, "cpus": int, "mem": str,
         "nodes": int, "tasks_per_node": int, "array_parallelism": int, "extra": dict, "setup": list}
TYPE_NAMES = {str: "string", int: "whole number", dict: "table of sbatch options", list: "list of strings"}
LEAST = {"time": 1, "gpus": 0, "cpus": 1, "nodes": 1, "tasks_per_node": 1, "array_parallelism": 1}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Slurm (with --launcher slurm)")
    group.add_argument("--slurm-config", metavar="FILE",
                       help=f"TOML file with a [slurm] table of the options below (default ${CONFIG_ENV})")
    group.add_argument("--slurm-partition", metavar="NAME", help="default: the cluster's default partition")
    group.add_argument("--slurm-account", metavar="NAME", help="account to charge the jobs to")
    group.add_argument("--slurm-qos", metavar="NAME", help="quality of service")
    group.add_argument("--slurm-time", type=int, metavar="MINUTES",
                       help=f"time limit per job (default {SlurmOptions.time}); a timed-out job requeues and resumes")
    group.add_argument("--slurm-gpus", type=int, metavar="N", help="GPUs per node; a run on several is data-parallel")
    group.add_argument("--slurm-nodes", type=int, metavar="N", help="nodes per run (default 1)")
    group.add_argument("--slurm-tasks-per-node", type=int, metavar="N",
                       help="processes (ranks) per node (default: one per GPU, else 1)")
    group.add_argument("--slurm-cpus", type=int, metavar="N", help="CPUs per task")
    group.add_argument("--slurm-mem", metavar="SIZE", help="memory per job, e.g. 16G")
    group.add_argument("--slurm-array-parallelism", type=int, metavar="N",
                       help=f"most jobs of the array running at once (default {SlurmOptions.array_parallelism})")
    group.add_argument("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                       help="any other sbatch option, e.g. constraint=a100 (repeatable)")
    group.add_argument("--slurm-setup", action="append", default=[], metavar="COMMAND",
                       help="shell command run before each job, e.g. 'source .venv/bin/activate' (repeatable)")
    group.add_argument("--wait", action="store_true", help="with --launcher slurm: wait until every job ends")


def options_from_args(args: argparse.Namespace) -> SlurmOptions:
    """Defaults < the config file < flags; --slurm-extra and --slurm-setup add to the file's."""
    path = getattr(args, "slurm_config", None) or os.environ.get(CONFIG_ENV)
    options = read_config(path) if path else SlurmOptions()
    flags = {name: getattr(args, f"slurm_{name}", None) for name in TYPES if name not in ("extra", "setup")}
    options = replace(options, **{k: v for k, v in flags.items() if v is not None})
    extra = {**options.extra, **parse_extra(getattr(args, "slurm_extra", []) or [])}
    setup = options.setup + list(getattr(args, "slurm_setup", []) or [])
    options = replace(options, extra=extra, setup=setup, wait=bool(getattr(args, "wait", False)))
    check(options, "--slurm-")
    return options


def read_config(path) -> SlurmOptions:
    path = Path(path).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"Slurm config file {path} does not exist",
                        hint=f"pass --slurm-config with an existing file, or unset ${CONFIG_ENV}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"Slurm config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"Slurm config file {path} is not a text file", hint="pass a TOML file with a [slurm] table") from None
    except OSError as exc:
        raise UserError(f"Slurm config file {path} cannot be read: {exc.strerror or exc}") from None
    table = data.get("slurm")
    if not isinstance(table, dict):
        raise UserError(f"Slurm config file {path} has no [slurm] table",
                        hint="put the options under a [slurm] header, e.g. [slurm] partition = \"gpu\"")
    for key, value in table.items():
        if key not in TYPES:
            raise unknown_name(f"key in the [slurm] table of {path}", key, sorted(TYPES))
        # TOML's booleans are ints to isinstance; a flag's value never is
        if not isinstance(value, TYPES[key]) or isinstance(value, bool):
            raise UserError(f"{path}: [slurm] {key} = {value!r} should be a {TYPE_NAMES[TYPES[key]]}")
    table["extra"] = {str(k): str(v) for k, v in table.get("extra", {}).items()}
    table["setup"] = [str(line) for line in table.get("setup", [])]
    options = SlurmOptions(**table)
    check(options, f"{path}: [slurm] ")
    return options


def parse_extra(items: list[str]) -> dict[str, str]:
    extra = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise UserError(f"--slurm-extra '{item}' is not KEY=VALUE",
                            hint="e.g. --slurm-extra constraint=a100 --slurm-extra mail-type=FAIL")
        extra[key] = value.strip()
    return extra


def check(options: SlurmOptions, where: str) -> None:
    for name, least in LEAST.items():
        value = getattr(options, name)
        if value is not None and value < least:
            raise UserError(f"{where}{name.replace('_', '-')} must be at least {least}, got {value}")
    if options.mem is not None and not MEMORY.match(options.mem):
        raise UserError(f"{where}mem '{options.mem}' is not a Slurm memory size", hint="e.g. 16G, 4000M or 500000K")
    for name in ("partition", "account", "qos"):
        value = getattr(options, name)
        if value is not None and not value.strip():
            raise UserError(f"{where}{name} is empty")
