"""What the benchmarks run on: specs at the paper protocol, their data, method instances and
endless batch streams. The one place the bench turns names into specs, so a change in how
specs are resolved is made here."""

import torch

from ltbench import registry
from ltbench.method import Method
from ltbench.runner import make_trainer
from ltbench.spec import RunSpec
from ltbench.sweep import resolve
from ltbench.teacher import untrained_teacher
from ltbench.train import Trainer


def bench_spec(method: str, dataset: str, imbalance_factor: float = 100.0, overrides: dict | None = None) -> RunSpec:
    """The paper protocol of `method` on `dataset`, seed 0, with `overrides` (e.g. backbone, batch size)."""
    return resolve(method, dataset, imbalance_factor, 0, "paper", overrides or {})


def specs_and_data(args):
    """(spec, dataset) for each method of `--methods`, with the chosen backbone and batch size."""
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        spec = bench_spec(method, args.dataset, args.imbalance_factor,
                          {"backbone": args.backbone, "batch_size": args.batch_size})
        yield spec, registry.dataset(args.dataset).build(args.data_root, spec.imbalance_factor, spec.profile,
                                                         spec.n_max)


def timed_trainer(spec: RunSpec, data, device: torch.device, params: dict | None = None) -> Trainer:
    """The trainer a run of `spec` trains with; a distilling method reads a teacher of its
    teacher run's architecture as initialised, since a step costs the same whatever the
    teacher's weights, and a benchmark should not train one first."""
    return make_trainer(spec, data, device, params, distils_from=untrained_teacher(spec, data))


def method_instance(name: str, dataset: str, class_counts: list[int], feature_dim: int,
                    overrides: dict | None = None) -> Method:
    """A registered method built as a run would build it, with its paper hyperparameters for `dataset`."""
    return registry.method(name)(bench_spec(name, dataset, overrides=overrides).own_hyperparameters, class_counts,
                                 feature_dim)


def batches_forever(trainer: Trainer):
    while True:
        yield from trainer.loader.epoch()
