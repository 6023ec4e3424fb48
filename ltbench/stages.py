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
from ltbench.settings import Stage2Plan
from ltbench.spec import RunSpec


@dataclass
class Stage1:
    spec: RunSpec
    reused: bool  # already done in the store when the two-stage run started
    result: dict  # its result row
    state: dict  # its last-epoch checkpoint (never the best-on-test epoch)


def stage1_spec(spec: RunSpec) -> RunSpec | None:
    """The spec of `spec`'s stage 1 (None for one-stage methods): the same dataset, imbalance
    factor, profile, backbone, epochs, batch size, trainer settings, seed and stage-1
    hyperparameters, without the two-stage method's own; labelled as `ltbench run` would label it."""
    from ltbench.sweep import preset_label  # sweep imports the registry of methods; keep this local

    method = registry.method(spec.method)
    if method.stage1 is None:
        return None
    name = method.stage1.name
    if registry.method(name) is not method.stage1:
        raise UserError(f"{spec.method}: its stage-1 method '{name}' is not the one registered under that name")
    first = replace(spec, method=name, hyperparameters={
        owner: values for owner, values in spec.hyperparameters.items() if owner != spec.method})
    return replace(first, preset=preset_label(first))


class FrozenBackbone(nn.Module):
    """A stage-1 backbone that stage 2 does not train: no gradients, and BatchNorm in eval mode
    unless `bn_train` (then it normalises with stage 2's batch statistics and its running
    statistics follow them, as classifier-balancing's run_networks.py L247-249 has it; the
    decoupled methods' default). With `trains_batchnorm` its BatchNorm weight and bias train
    (Stage2Plan.trains "batchnorm_affine"), and only they."""

    def __init__(self, backbone: nn.Module, bn_train: bool = False, trains_batchnorm: bool = False):
        super().__init__()
        self.backbone = backbone.requires_grad_(False)
        self.bn_train = bn_train
        self.num_features = backbone.num_features
        if trains_batchnorm:
            for module in backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                    module.requires_grad_(True)
        self.trains = any(p.requires_grad for p in backbone.parameters())

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.train(mode and self.bn_train)
        return self

    def forward(self, x):
        with torch.set_grad_enabled(self.trains and torch.is_grad_enabled()):
            return self.backbone(x)


def stage2_setup(backbone: nn.Module, method, stage1: Stage1, params: dict, class_counts) -> tuple[nn.Module, dict]:
    """Load the stage-1 weights into `backbone` and `method`; returns the frozen backbone and
    the Trainer's arguments for stage 2, as the method's Stage2Plan says."""
    backbone.load_state_dict(stage1.state["backbone"])
    first = method.stage1(stage1.spec.own_hyperparameters, class_counts, backbone.num_features)
    first.load_state_dict(stage1.state["method"])
    method.load_stage1(first)
    plan = method.stage2()
    if not isinstance(plan, Stage2Plan):
        raise TypeError(f"{method.name}.stage2() must return a ltbench.settings.Stage2Plan, not {type(plan).__name__}")
    if "classifier" not in plan.trains:
        method.requires_grad_(False)
    frozen = FrozenBackbone(backbone, bn_train=plan.bn_train, trains_batchnorm="batchnorm_affine" in plan.trains)
    return frozen, {
        "params": plan.trainer_params(params), "epochs": plan.epochs, "batch_size": plan.batch_size,
        "lr_step_first": plan.lr_step_first}
