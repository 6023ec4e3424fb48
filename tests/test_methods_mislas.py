"""MiSLAS: label-aware smoothing against values worked out apart from the code, the stage-2 step
against plain SGD with the classifier's lr factor, stage 2 training exactly what its plan
declares, and the paper defaults per dataset."""

import pytest
import torch
import torch.nn.functional as F

from ltbench.testing import _one_step, toy_data, toy_spec, toy_trainer
from ltbench_methods.mislas import MiSLAS, label_aware_epsilon, label_aware_smoothing_loss

COUNTS = torch.tensor([500.0, 200.0, 50.0, 10.0])
LOGITS = torch.tensor([[2.0, -1.0, 0.5, 0.0], [0.3, 1.2, -0.7, 0.1], [-0.5, 0.0, 2.5, -1.5], [1.0, 1.0, 1.0, 3.0]])


def test_epsilon_follows_the_concave_schedule_from_head_to_tail():
    # eps_j = 0.1 + 0.3 sin(pi (n_j - 10) / 980), worked out by hand for n = 500, 200, 50, 10
    eps = label_aware_epsilon(COUNTS, smooth_head=0.4, smooth_tail=0.1)
    assert torch.allclose(eps, torch.tensor([0.4, 0.2716350, 0.1383631, 0.1]), atol=1e-6)


def test_label_aware_smoothing_is_cross_entropy_on_the_smoothed_targets():
    # the paper's target: 1 - eps_y on the label and eps_y / K on every class, scored by -sum q log p;
    # 0.7131342 worked out in float64 from those targets
    eps = label_aware_epsilon(COUNTS, 0.4, 0.1)
    loss = label_aware_smoothing_loss(LOGITS, torch.tensor([0, 1, 2, 3]), eps)
    assert loss.item() == pytest.approx(0.7131342083920194, abs=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_one_epsilon_for_every_class_is_torchs_label_smoothing(eps):
    labels = torch.tensor([3, 3, 0, 2])
    ours = label_aware_smoothing_loss(LOGITS, labels, torch.full((4,), eps))
    assert torch.allclose(ours, F.cross_entropy(LOGITS, labels, label_smoothing=eps), atol=1e-6)


def test_the_classifier_steps_at_its_lr_factor_as_sgd_with_two_groups_would():
    torch.manual_seed(0)
    hp = {**MiSLAS.defaults(), "classifier_lr_factor": 0.2, "mislas_weight_decay": 0.05}
    method = MiSLAS(hp, COUNTS.tolist(), feature_dim=6)
    classifier, scales = torch.nn.Linear(6, 4), torch.nn.Parameter(torch.ones(4))
    classifier.load_state_dict(method.classifier.state_dict())
    lr, decay = 0.1, hp["mislas_weight_decay"]
    # the shared trainer's groups: weight decay off for what no_weight_decay names
    plain = method.no_weight_decay()
    ours = torch.optim.SGD([{"params": [p for n, p in method.named_parameters() if n not in plain]},
                            {"params": [p for n, p in method.named_parameters() if n in plain], "weight_decay": 0.0}],
                           lr=lr, momentum=0.9, weight_decay=decay)
    # train_stage2.py L241-244, L458-462: the classifier at lr_factor * lr, the scales at lr
    reference = torch.optim.SGD([{"params": classifier.parameters(), "lr": 0.2 * lr}, {"params": [scales]}],
                                lr=lr, momentum=0.9, weight_decay=decay)
    for _ in range(3):
        features, labels = torch.randn(8, 6), torch.randint(0, 4, (8,))
        for optimizer, loss in ((ours, label_aware_smoothing_loss(method.logits(features), labels, method.epsilon)),
                                (reference, label_aware_smoothing_loss(classifier(features) * scales, labels,
                                                                       method.epsilon))):
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert torch.allclose(method.classifier.weight, classifier.weight, atol=1e-6)
    assert torch.allclose(method.classifier.bias, classifier.bias, atol=1e-6)
    assert torch.allclose(method.scales, scales, atol=1e-6)


def _stage2_step(**overrides):
    trainer = toy_trainer(toy_spec("mislas", **overrides), toy_data())
    backbone = {k: v.clone() for k, v in trainer.backbone.state_dict().items()}
    method = {k: v.clone() for k, v in trainer.method.state_dict().items()}
    _one_step(trainer)
    moved = lambda before, after: {k for k, v in after.items() if not torch.equal(before[k], v)}  # noqa: E731
    return trainer, moved(backbone, trainer.backbone.state_dict()), moved(method, trainer.method.state_dict())


def test_stage2_trains_the_classifier_and_scales_and_leaves_the_backbone_bit_identical():
    _, backbone, method = _stage2_step(**{"mislas.mislas_bn_train": "false"})
    assert backbone == set()
    assert method == {"classifier.weight", "classifier.bias", "scales"}


def test_shift_learning_moves_only_the_batchnorm_running_statistics():
    _, backbone, _ = _stage2_step(**{"mislas.mislas_bn_train": "true"})
    assert backbone and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in backbone)


def test_batchnorm_affine_in_the_plan_trains_the_batchnorm_weight_and_bias_and_nothing_else_of_the_backbone():
    trainer, backbone, method = _stage2_step(**{"mislas.mislas_bn_affine": "true", "mislas.mislas_bn_train": "false"})
    assert trainer.method.stage2().trains == ("classifier", "batchnorm_affine")
    norms = {name for name, m in trainer.backbone.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    affine = {f"{n}.{p}" for n in norms for p in ("weight", "bias")}
    assert backbone == affine  # every BatchNorm's weight and bias moved, no convolution, no statistic
    assert method == {"classifier.weight", "classifier.bias", "scales"}
    trainable = {n for n, p in trainer.backbone.named_parameters() if p.requires_grad}
    assert trainable == affine


def test_a_stage2_that_trains_no_classifier_freezes_the_method():
    from ltbench.models import create_backbone
    from ltbench.settings import Stage2Plan
    from ltbench.stages import Stage1, stage2_setup

    data = toy_data()
    first = toy_trainer(toy_spec("ce_mixup"), data)
    stage1 = Stage1(toy_spec("ce_mixup"), True, {}, {"backbone": first.backbone.state_dict(),
                                                     "method": first.method.state_dict()})
    method = MiSLAS(toy_spec("mislas").own_hyperparameters, data.class_counts, first.backbone.num_features)
    method.stage2 = lambda: Stage2Plan(epochs=1, batch_size=8, trains=("batchnorm_affine",))
    frozen, _ = stage2_setup(create_backbone("resnet8_cifar", 3), method, stage1, {}, data.class_counts)
    assert not any(p.requires_grad for p in method.parameters())
    trainable = {n for n, p in frozen.named_parameters() if p.requires_grad}
    norms = [m for m in frozen.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert trainable and len(trainable) == 2 * len(norms)
    assert {id(p) for p in frozen.parameters() if p.requires_grad} == {id(p) for m in norms for p in m.parameters()}


@pytest.mark.parametrize("trains, message", [((), "non-empty tuple"), (["classifier"], "non-empty tuple"),
                                             (("classifier", "layer4"), "classifier, batchnorm_affine")])
def test_a_plan_refuses_parts_it_does_not_know(trains, message):
    from ltbench.settings import Stage2Plan

    with pytest.raises(ValueError, match=message):
        Stage2Plan(epochs=1, batch_size=8, trains=trains)


def test_paper_defaults_per_dataset():
    from ltbench.sweep import resolve

    c10 = resolve("mislas", "cifar10_lt", 100, 0, "paper", {}).own_hyperparameters
    assert (c10["smooth_head"], c10["smooth_tail"], c10["mislas_bn_train"], c10["classifier_lr_factor"]) == (
        0.3, 0.0, False, 0.5)
    c100 = resolve("mislas", "cifar100_lt", 100, 0, "paper", {}).own_hyperparameters
    assert (c100["smooth_head"], c100["smooth_tail"], c100["mislas_bn_train"], c100["classifier_lr_factor"]) == (
        0.4, 0.1, True, 0.2)
    inet = resolve("mislas", "imagenet_lt", 256, 0, "paper", {})
    assert inet.backbone == "resnet50" and inet.epochs == 180 and inet.batch_size == 256
    assert inet.params["schedule"] == "cosine" and inet.params["weight_decay"] == 5e-4
    assert inet.hyperparameters["ce_mixup"]["mix_alpha"] == 0.2
    assert inet.own_hyperparameters["classifier_lr_factor"] == 0.05
    assert resolve("ce_mixup", "cifar10_lt", 100, 0, "paper", {}).params["lr_factors"] == [0.1, 0.01]


def test_published_figures_are_the_authors_readme_leads():
    from ltbench.report.reference import load_published

    published = load_published()
    rows = published[published["method"].isin(["mislas", "ce_mixup"])]
    # the paper's own tables could not be read: every figure is a lead, as the README prints it
    assert len(rows) == 18 and not rows["confirmed"].any() and set(rows["selection"]) == {"best_on_test"}
    mislas = rows[rows["method"] == "mislas"]
    cifar = {(d, int(f)): t for d, f, t in zip(mislas["dataset"], mislas["imbalance_factor"], mislas["top1"])
             if d.startswith("cifar")}
    assert cifar == {("cifar10_lt", 10): 90.0, ("cifar10_lt", 50): 85.7, ("cifar10_lt", 100): 82.5,
                     ("cifar100_lt", 10): 63.2, ("cifar100_lt", 50): 52.3, ("cifar100_lt", 100): 47.0}
    natural = mislas[mislas["imbalance_factor"].isna()]
    large = dict(zip(natural["dataset"], natural["top1"]))
    assert large == {"imagenet_lt": 52.7, "inat2018": 71.6, "places_lt": 40.4}
    c100 = mislas[(mislas["dataset"] == "cifar100_lt") & (mislas["imbalance_factor"] == 100)].iloc[0]
    assert c100["params"]["smooth_tail"] == 0.1 and c100["params"]["mislas_bn_train"] is True
