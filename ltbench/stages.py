"""Two-stage methods: stage 1 is a finished run of another method with the same spec.

Decoupling (Kang et al., ICLR 2020) learns the representation with plain instance-sampled
cross-entropy and then re-balances only the classifier, so its stage 1 is exactly a CE run.
When the store already holds that run it is reused; otherwise it is trained as a run of its
own, so later CE comparisons (and the other decoupled methods) reuse it too.

Stage 2 starts from stage 1's last epoch, or with `stage1_epoch = "bestval"` from its
evaluated epoch best on the validation split, as classifier-balancing does: its stage 1
keeps the weights of the epoch best on validation (run_networks.py L357-362) and saves them
as `state_dict_best` (L705-714), which is what a stage 2 loads (L665-690;
facebookresearch/classifier-balancing@f162adef63fdf592d0b8a0f6e52bc481fc08785f). Its validation
split is ltbench's (ltbench.data), never the test set.
"""

from dataclasses import dataclass, replace

import torch
from torch import nn

from ltbench import registry
from ltbench.errors import UserError
from ltbench.settings import Setting, Stage2Plan
from ltbench.spec import RunSpec
from ltbench.teacher import teacher_spec


@dataclass
class FinishedRun:
    """A run another run starts from (a stage 1) or reads (a teacher, ltbench.teacher)."""

    spec: RunSpec
    reused: bool  # already done in the store when the run that needs it started
    result: dict  # its result row
    state: dict  # its last-epoch checkpoint (never the best-on-test epoch), bestval_weights included


Stage1 = FinishedRun


CLASSIFIER_BALANCING = "classifier-balancing@f162ade run_networks.py"
# the setting each two-stage method declares among its hyperparameters; its default stays out
# of the spec, so the runs made before it existed keep their run ids
STAGE1_EPOCH = Setting(
    "last", "the stage-1 epoch stage 2 starts from: last, or bestval (the evaluated epoch best on the validation "
    "split; its stage 1 is the same run either way)", choices=("last", "bestval"), omit_at_default=True,
    source=f"ltbench default (the last epoch, as before); bestval: {CLASSIFIER_BALANCING} L357-362, L705-714, "
    "L665-690 (stage 2 loads the stage-1 weights best on validation)")


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


def dependencies(spec: RunSpec) -> list[RunSpec]:
    """The runs `spec` needs finished before it trains: its stage 1, its teacher (ltbench.teacher)."""
    return [first for first in (stage1_spec(spec), teacher_spec(spec)) if first is not None]


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
    weights = stage1_weights(stage1, method.hp.get("stage1_epoch", STAGE1_EPOCH.default))
    backbone.load_state_dict(weights["backbone"])
    first = method.stage1(stage1.spec.own_hyperparameters, class_counts, backbone.num_features)
    first.load_state_dict(weights["method"])
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


def stage1_weights(stage1: Stage1, epoch: str) -> dict:
    """The stage-1 backbone and method weights stage 2 starts from: the last epoch's, or
    (`epoch` bestval) those of its epoch best on validation."""
    if epoch == "last":
        return stage1.state
    weights = stage1.state.get("bestval_weights")
    if weights is None:
        raise UserError(f"stage1_epoch = bestval: stage-1 run {stage1.spec.run_id} ({stage1.spec.label}) kept no weights "
                        "of an epoch best on validation (its data has no validation split, or it was trained before "
                        "checkpoints kept them): move its folder away to train it again, or leave stage1_epoch at last")
    return weights
