"""Decoupling's classifier stage (Kang et al., ICLR 2020), shared by cRT and LWS: a CE run's
backbone kept frozen, a classifier (or a part of one) trained on it with class-balanced sampling
and cross-entropy, as classifier-balancing's run_networks.py runs it: the frozen backbone's
BatchNorm in train mode (`<name>_bn_train`) and the cosine schedule stepped before each epoch,
so the last epoch trains at lr 0 (`<name>_lr_step_first`); see
ltbench_methods.common.classifier_stage2 for the one difference, the epoch kept (last, not best
on a validation split). Subclasses say which parameters train and how they make the logits.
"""

from typing import ClassVar

import torch.nn.functional as F

from ltbench.method import Draw, Method
from ltbench_methods.ce import CrossEntropy
from ltbench_methods.common import classifier_stage2, dataset_stage2_settings


def places_lt_stage2(config: str) -> dict[str, tuple]:
    """classifier-balancing's Places-LT classifier stage (`config`, e.g. config/Places_LT/cls_lws.yaml),
    where it differs from its ImageNet-LT one: lr 0.1, batch 256 (cRT's and LWS's alike)."""
    source = f"classifier-balancing {config}"
    return {"lr": (0.1, f"{source} L15: lr 0.1"), "batch_size": (256, f"{source} L25: batch_size 256")}


class ClassifierStage(Method):
    """The stage-2 settings live under `<name>_*` (ltbench_methods.common.classifier_stage2_settings),
    so a subclass's `hyperparameters` are classifier_stage2_settings(name, ...)."""

    stage1 = CrossEntropy
    draws = {"main": Draw(sampler="class_balanced")}
    # classifier-balancing's configs for other datasets than ImageNet-LT, where they differ from
    # its ImageNet-LT one: {dataset name: {setting without the prefix: (value, source)}}
    by_dataset: ClassVar[dict[str, dict[str, tuple]]] = {}

    @classmethod
    def settings(cls, dataset):
        return dataset_stage2_settings(super().settings(dataset), cls.name, dataset, cls.by_dataset)

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        # ClassAwareSampler's num_samples_cls images of a class per class draw
        self.draws = {"main": Draw(sampler="class_balanced", per_class=hp[f"{self.name}_per_class"])}

    def stage2(self):
        return classifier_stage2(self.hp, self.name)

    def loss(self, backbone, batches, progress):
        batch = batches["main"]
        return F.cross_entropy(self.logits(backbone(batch.views[0])).float(), batch.labels)
