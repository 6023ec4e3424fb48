"""Two-stage methods: stage 1 is a finished run of another method with the same spec.

Decoupling (Kang et al., ICLR 2020) learns the representation with plain instance-sampled
cross-entropy and then re-balances only the classifier, so its stage 1 is exactly a CE run.
When the store already holds that run it is reused; otherwise it is trained as a run of its
own, so later CE comparisons (and the other decoupled methods) reuse it too.
"""

from dataclasses import dataclass, replace

import torch
from torch import nn

from ltbench import registry
from ltbench.errors import UserError
from ltbench.presets import PRESETS
from ltbench.spec import RunSpec


@dataclass
class Stage1:
    spec: RunSpec
    reused: bool  # already done in the store when the two-stage run started
    result: dict  # its result row
    state: dict  # its last-epoch checkpoint (never the best-on-test epoch)


def stage1_spec(spec: RunSpec) -> RunSpec | None:
    """The spec of `spec`'s stage 1 (None for one-stage methods): the same dataset, imbalance
    factor, profile, backbone, epochs, batch size, trainer settings and seed, without the
    two-stage method's own hyperparameters; labelled as `ltbench run` would label it."""
    from ltbench.sweep import resolve  # sweep imports the trainer; keep this import local

    method = registry.method(spec.method)
    if method.stage1 is None:
        return None
    name = method.stage1.name
    if registry.method(name) is not method.stage1:
        raise UserError(f"{spec.method}: its stage-1 method '{name}' is not the one registered under that name")
    params = {k: v for k, v in spec.params.items() if k not in method.hyperparameters}
    stage1 = replace(spec, method=name, params=params)
    pure = {p: resolve(name, spec.dataset, spec.imbalance_factor, spec.seed, p, {}) for p in PRESETS}
    expected = set(next(iter(pure.values())).params)
    if set(params) != expected:
        odd = sorted(set(params) ^ expected)
        raise UserError(f"{spec.method}: stage 1 must be a plain '{name}' run, but the settings "
                        f"{', '.join(odd)} do not match {name}'s",
                        hint=f"set only {name}'s settings and {spec.method}'s own ({', '.join(method.hyperparameters)})")
    label = next((p for p, s in pure.items() if s.run_id == stage1.run_id), "custom")
    return replace(stage1, preset=label)


class FrozenBackbone(nn.Module):
    """A stage-1 backbone that stage 2 does not train: no gradients, and BatchNorm in eval mode
    unless `bn_train` (then its running statistics follow stage 2's batches, as the released
    classifier-balancing code lets them)."""

    def __init__(self, backbone: nn.Module, bn_train: bool = False):
        super().__init__()
        self.backbone = backbone.requires_grad_(False)
        self.bn_train = bn_train
        self.num_features = backbone.num_features

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.train(mode and self.bn_train)
        return self

    def forward(self, x):
        with torch.no_grad():
            return self.backbone(x)


def stage2_setup(backbone: nn.Module, method, stage1: Stage1, params: dict, class_counts) -> tuple[nn.Module, dict]:
    """Load the stage-1 weights into `backbone` and `method`; returns the frozen backbone and
    the Trainer's params, epochs and batch size for stage 2."""
    backbone.load_state_dict(stage1.state["backbone"])
    first = method.stage1(stage1.spec.params, class_counts, backbone.num_features)
    first.load_state_dict(stage1.state["method"])
    method.load_stage1(first)
    settings = dict(method.stage2())
    frozen = FrozenBackbone(backbone, bn_train=settings.pop("bn_train", False))
    epochs, batch_size = settings.pop("epochs"), settings.pop("batch_size")
    return frozen, {"params": {**params, **settings}, "epochs": epochs, "batch_size": batch_size}
