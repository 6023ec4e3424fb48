"""Backbones with several experts sharing their early layers, registered in timm.

RIDE (Wang et al., ICLR 2021) splits a ResNet after its early stages: one shared stem and
first stage(s), then one copy of the later stages per expert, each at reduced width, so that
three experts cost far less than three networks (ResNet-32's three: 1.46 times the forward
FLOPs of the plain network, tests/test_methods_ride.py). Following frank-xwang/RIDE-LongTailRecognition
at commit ab8be5c21124612493aff87c7cf235d950bda178:

- CIFAR (model/ldam_drw_resnets/ride_resnet_cifar.py L105-124): conv1 and layer1 (16 channels)
  shared, layer2 and layer3 per expert, 24 and 48 channels with `reduce_dimension` (32, 64
  without);
- ImageNet-LT and iNaturalist (model/fb_resnets/RIDEResNet.py L114-145): stem, layer1 and
  layer2 shared, layer3 and layer4 per expert with 192 and 384 planes with `reduce_dimension`
  (256, 512 without). Built here from timm's own ResNet (`channels=`), so any timm ResNet
  or ResNeXt has its multi-expert form.

`forward(x)` returns features of shape [batch, experts, num_features]: batch first, as every
other backbone's, so whatever splits or joins features on the batch (chunked evaluation, the
validation features of post-hoc choices, a distributed rank's share) works unchanged; a method
that owns one head per expert combines them (`ltbench_methods.ride`). `shared` is the one module
every expert's path runs through; `experts[k]` is expert k's own.

    timm.create_model("ride_resnet32_cifar", num_experts=3)      # RIDE's CIFAR backbone
    create_expert_backbone("resnet50", in_chans=3, num_experts=2)  # from a plain backbone's name
"""

import timm
import torch
from timm.models import register_model
from timm.models.resnet import ResNet
from torch import nn

from ltbench.errors import UserError
from ltbench.models import CIFAR_BACKBONES, BasicBlock, check_backbone

RIDE = "frank-xwang/RIDE-LongTailRecognition@ab8be5c"
# RIDE's widths of the per-expert stages, full and reduced (`reduce_dimension`)
CIFAR_WIDTHS = {False: (32, 64), True: (24, 48)}
IMAGENET_PLANES = {False: (256, 512), True: (192, 384)}


class MultiExpertBackbone(nn.Module):
    """`shared` once, then each of `experts` on its output, each pooled to `num_features`."""

    def __init__(self, shared: nn.Module, experts: list[nn.Module], num_features: int):
        super().__init__()
        if not experts:
            raise ValueError("a multi-expert backbone needs at least one expert")
        self.shared = shared
        self.experts = nn.ModuleList(experts)
        self.num_experts = len(experts)
        self.num_features = num_features

    def forward(self, x: torch.Tensor, experts: list[int] | None = None) -> torch.Tensor:
        """Features [batch, experts, num_features] of all experts, or of those listed (BBN runs
        one branch per batch: the others' BatchNorm must not see it)."""
        h = self.shared(x)
        chosen = range(self.num_experts) if experts is None else experts
        return torch.stack([self.experts[k](h).mean((2, 3)) for k in chosen], dim=1)


def cifar_experts(depth: int, num_experts: int = 3, reduce_dimension: bool = True, in_chans: int = 3,
                  **_ignored) -> MultiExpertBackbone:
    """RIDE's CIFAR ResNet (ResNet_s): He et al.'s option-A ResNet of `depth`, its first stage
    shared and its second and third per expert."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    blocks = (depth - 2) // 6

    def stage(in_planes, planes, stride):
        return [BasicBlock(in_planes if i == 0 else planes, planes, stride if i == 0 else 1) for i in range(blocks)]

    second, third = CIFAR_WIDTHS[reduce_dimension]
    shared = nn.Sequential(nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
                           *stage(16, 16, 1))
    experts = [nn.Sequential(*stage(16, second, 2), *stage(second, third, 2)) for _ in range(num_experts)]
    # ride_resnet_cifar.py L35-38, L142: kaiming_normal_ on every convolution, as LDAM-DRW's ResNet-32
    return kaiming_convolutions(MultiExpertBackbone(shared, experts, third))


def kaiming_convolutions(model: nn.Module) -> nn.Module:
    """`model` with kaiming_normal_ on every convolution's weight, as the CIFAR ResNets start."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
    return model


def timm_resnet(name: str, kind: str, prefix: str, **options) -> ResNet:
    """timm's ResNet `name` with `options`; a UserError for a model of another family."""
    model = timm.create_model(name, pretrained=False, num_classes=0, **options)
    if not isinstance(model, ResNet):
        raise UserError(f"backbone '{name}' is not a ResNet, so it has no {kind} form",
                        hint=f"use one of {', '.join(expert_bases(prefix))}")
    return model


def resnet_experts(name: str, num_experts: int = 3, reduce_dimension: bool = True, in_chans: int = 3,
                   **_ignored) -> MultiExpertBackbone:
    """RIDEResNet from timm's ResNet `name` (resnet18, resnet50, resnext50_32x4d, ...): its stem,
    layer1 and layer2 shared, layer3 and layer4 per expert at RIDE's widths."""
    # RIDEResNet.py L153-159 starts every BatchNorm at weight 1 and bias 0, the last of each
    # block included; timm would zero that one (zero_init_last)
    options = dict(in_chans=in_chans, zero_init_last=False)
    trunk = timm_resnet(name, "multi-expert", PREFIX, **options)
    third, fourth = IMAGENET_PLANES[reduce_dimension]
    shared = nn.Sequential(trunk.conv1, trunk.bn1, trunk.act1, trunk.maxpool, trunk.layer1, trunk.layer2)
    experts, width = [], trunk.num_features
    for _ in range(num_experts):
        own = timm_resnet(name, "multi-expert", PREFIX, **options, channels=(64, 128, third, fourth))
        experts.append(nn.Sequential(own.layer3, own.layer4))
        width = own.num_features
    return MultiExpertBackbone(shared, experts, width)


def cifar_branches(depth: int, num_experts: int = 2, in_chans: int = 3, **_ignored) -> MultiExpertBackbone:
    """BBN's CIFAR ResNet (Megvii-Nanjing/BBN lib/backbone/resnet_cifar.py L153-211): He et al.'s
    option-A ResNet of `depth` shared up to its last residual block, which each branch has its
    own copy of (the conventional and the re-balancing branch)."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    blocks = (depth - 2) // 6
    layers, in_planes = [nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)], 16
    for planes, stride in [(16, 1), (32, 2), (64, 2)]:
        for i in range(blocks - (planes == 64)):
            layers.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
            in_planes = planes
    # the last block is the branches' own; at depth 8, the third stage's only one (32 -> 64, stride 2)
    branches = [BasicBlock(in_planes, 64, 1 if blocks > 1 else 2) for _ in range(num_experts)]
    # resnet_cifar.py L42-45, L166: kaiming_normal_ on every convolution
    return kaiming_convolutions(MultiExpertBackbone(nn.Sequential(*layers), branches, 64))


def resnet_branches(name: str, num_experts: int = 2, in_chans: int = 3, **_ignored) -> MultiExpertBackbone:
    """BBN's ResNet (lib/backbone/resnet.py L184-206) from timm's ResNet `name`: shared up to the
    last block of layer4, which each branch has its own copy of."""
    trunk = timm_resnet(name, "two-branch", BBN_PREFIX, in_chans=in_chans)
    shared = nn.Sequential(trunk.conv1, trunk.bn1, trunk.act1, trunk.maxpool, trunk.layer1, trunk.layer2,
                           trunk.layer3, trunk.layer4[:-1])
    branches = [timm_resnet(name, "two-branch", BBN_PREFIX, in_chans=in_chans).layer4[-1] for _ in range(num_experts)]
    return MultiExpertBackbone(shared, branches, trunk.num_features)


# One registered function per model, as models.py registers the CIFAR ResNets: `ride_` (or
# `bbn_`) and the plain backbone's name
@register_model
def ride_resnet8_cifar(pretrained=False, **kwargs):
    return cifar_experts(8, **kwargs)


@register_model
def ride_resnet20_cifar(pretrained=False, **kwargs):
    return cifar_experts(20, **kwargs)


@register_model
def ride_resnet32_cifar(pretrained=False, **kwargs):
    return cifar_experts(32, **kwargs)


@register_model
def ride_resnet56_cifar(pretrained=False, **kwargs):
    return cifar_experts(56, **kwargs)


@register_model
def ride_resnet18(pretrained=False, **kwargs):
    return resnet_experts("resnet18", **kwargs)


@register_model
def ride_resnet50(pretrained=False, **kwargs):
    return resnet_experts("resnet50", **kwargs)


@register_model
def ride_resnext50_32x4d(pretrained=False, **kwargs):
    return resnet_experts("resnext50_32x4d", **kwargs)


@register_model
def bbn_resnet8_cifar(pretrained=False, **kwargs):
    return cifar_branches(8, **kwargs)


@register_model
def bbn_resnet20_cifar(pretrained=False, **kwargs):
    return cifar_branches(20, **kwargs)


@register_model
def bbn_resnet32_cifar(pretrained=False, **kwargs):
    return cifar_branches(32, **kwargs)


@register_model
def bbn_resnet56_cifar(pretrained=False, **kwargs):
    return cifar_branches(56, **kwargs)


@register_model
def bbn_resnet18(pretrained=False, **kwargs):
    return resnet_branches("resnet18", **kwargs)


@register_model
def bbn_resnet50(pretrained=False, **kwargs):
    return resnet_branches("resnet50", **kwargs)


PREFIX, BBN_PREFIX = "ride_", "bbn_"  # RIDE's experts; BBN's two branches


def expert_bases(prefix: str = PREFIX) -> list[str]:
    """The plain backbones that have a registered form under `prefix`."""
    return [name.removeprefix(prefix) for name in timm.list_models(f"{prefix}*")]


def is_multi_expert(name: str) -> bool:
    """Whether timm's model `name` is one of the multi-expert (or two-branch) backbones registered here."""
    return any(name in timm.list_models(f"{prefix}*") for prefix in (PREFIX, BBN_PREFIX))


def expert_form(name: str, prefix: str = PREFIX) -> str:
    """The registered form under `prefix` of backbone `name` (resnet32_cifar -> ride_resnet32_cifar;
    a name with the prefix is its own); a UserError where there is none."""
    check_backbone(name)
    registered = name if name.startswith(prefix) else prefix + name
    if registered not in timm.list_models(f"{prefix}*"):
        kind = "multi-expert" if prefix == PREFIX else "two-branch"
        raise UserError(f"backbone '{name}' has no {kind} form",
                        hint=f"use one of {', '.join(expert_bases(prefix))}, e.g. --backbone {CIFAR_BACKBONES[2]}")
    return registered


def create_expert_backbone(name: str, in_chans: int, num_experts: int, reduce_dimension: bool = True) -> nn.Module:
    """The multi-expert form of backbone `name` (expert_form) with `num_experts` experts."""
    return timm.create_model(expert_form(name), pretrained=False, num_experts=num_experts,
                             reduce_dimension=reduce_dimension, in_chans=in_chans)


def create_branch_backbone(name: str, in_chans: int) -> nn.Module:
    """BBN's two-branch form of backbone `name` (resnet32_cifar -> bbn_resnet32_cifar)."""
    return timm.create_model(expert_form(name, BBN_PREFIX), pretrained=False, in_chans=in_chans)
