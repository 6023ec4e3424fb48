import timm
import torch

import ltbench.models  # noqa: F401  (registers the CIFAR ResNets with timm)
from ltbench.errors import UserError
from ltbench.models import create_backbone


def test_resnet32_is_registered_with_timm_and_has_046m_parameters():
    model = timm.create_model("resnet32_cifar", num_classes=10)
    params = sum(p.numel() for p in model.parameters())
    assert 0.45e6 < params < 0.47e6  # LDAM-DRW's ResNet-32: 0.464 M
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_smaller_cifar_resnets_and_feature_api():
    for name, blocks in [("resnet8_cifar", 1), ("resnet20_cifar", 3)]:
        model = timm.create_model(name, num_classes=0, in_chans=1)
        assert len(model.layers) == 3 * blocks
        feats = model(torch.randn(4, 1, 32, 32))
        assert feats.shape == (4, 64)
        model.reset_classifier(7)
        assert model.forward_head(model.forward_features(torch.randn(1, 1, 32, 32))).shape == (1, 7)


def test_option_a_shortcuts_have_no_parameters():
    model = timm.create_model("resnet32_cifar", num_classes=0)
    block = model.layers[5]  # first block of stage 2: 16 -> 32 channels, stride 2
    assert sum(p.numel() for p in block.shortcut.parameters()) == 0
    out = block.shortcut(torch.ones(1, 16, 8, 8))
    assert out.shape == (1, 32, 4, 4) and out[:, :8].abs().sum() == 0 and out[:, 8:24].eq(1).all()


def test_unknown_backbone_names_the_closest():
    try:
        create_backbone("resnet23_cifar", 3)
    except UserError as exc:
        assert "resnet" in str(exc) and "resnet32_cifar" in str(exc)
    else:
        raise AssertionError("expected a UserError")


def test_each_cifar_resnet_is_a_registered_function_of_its_depth():
    import ltbench.models as models

    for name in models.CIFAR_BACKBONES:
        entry = timm.models.model_entrypoint(name)
        assert entry is getattr(models, name) and entry.__module__ == "ltbench.models"
        depth = int(name.removeprefix("resnet").removesuffix("_cifar"))
        assert len(timm.create_model(name, num_classes=0).layers) == 3 * (depth - 2) // 6
