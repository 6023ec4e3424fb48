"""Backbones through timm, with the CIFAR ResNets of He et al. (2016) registered in timm.

`timm.create_model("resnet32_cifar", num_classes=0)` gives the feature extractor every
CIFAR-LT paper uses: 3 stages of 5 basic blocks, 16/32/64 channels, option-A (zero-padding)
shortcuts, Kaiming-normal init, global average pool to 64-d; about 0.46 M parameters.
Methods own their heads, so the trainer always builds backbones with num_classes=0.
"""

import importlib

import timm
import torch.nn.functional as F
from timm.models import register_model
from torch import nn

from ltbench.errors import unknown_name


class ZeroPadShortcut(nn.Module):
    """Option A: subsample by 2 and pad the new channels with zeros (no parameters)."""

    def __init__(self, extra_channels: int):
        super().__init__()
        self.pad = extra_channels // 2

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = ZeroPadShortcut(planes - in_planes) if stride != 1 or in_planes != planes else nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out, inplace=True)


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10, in_chans: int = 3, **_ignored):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, in_planes = [], 16
        for planes, stride in [(16, 1), (32, 2), (64, 2)]:
            for i in range(blocks):
                stages.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*stages)
        self.num_features = 64
        self.fc = nn.Linear(64, num_classes) if num_classes else nn.Identity()
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward_features(self, x):
        return self.layers(F.relu(self.bn1(self.conv1(x)), inplace=True))

    def forward_head(self, x, pre_logits: bool = False):
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def get_classifier(self):
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool=None):
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()


# He et al.'s CIFAR depths 20, 32 (the CIFAR-LT papers' backbone since LDAM-DRW) and 56; 8 for
# quick runs. One registered function per model, as timm registers its own: the function's name
# is the name users type.


@register_model
def resnet8_cifar(pretrained=False, **kwargs):
    return CifarResNet(8, **kwargs)


@register_model
def resnet20_cifar(pretrained=False, **kwargs):
    return CifarResNet(20, **kwargs)


@register_model
def resnet32_cifar(pretrained=False, **kwargs):
    return CifarResNet(32, **kwargs)


@register_model
def resnet56_cifar(pretrained=False, **kwargs):
    return CifarResNet(56, **kwargs)


CIFAR_BACKBONES = [model.__name__ for model in (resnet8_cifar, resnet20_cifar, resnet32_cifar, resnet56_cifar)]


def check_backbone(name: str) -> None:
    if name not in timm.list_models():
        raise unknown_name("backbone", name, CIFAR_BACKBONES + ["any timm model, e.g. resnet50"],
                           candidates=timm.list_models())


def create_backbone(name: str, in_chans: int) -> nn.Module:
    """A feature extractor: forward(x) returns pooled features of size `num_features`."""
    check_backbone(name)
    return timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans)


# The multi-expert forms of these backbones (ride_resnet32_cifar, ...) register with timm
# whenever the plain ones do, so every name a user may type is known once this module is
# imported; ltbench.experts builds on this module's blocks, hence the import at the end.
importlib.import_module("ltbench.experts")
