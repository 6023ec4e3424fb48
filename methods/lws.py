"""Learnable weight scaling, LWS (Kang et al., ICLR 2020): keep a CE run's backbone and
classifier, learn one scale per class, f_j(x) = s_j (w_j^T x + b_j), with class-balanced sampling.

Stage 2 runs as cRT's (ltbench_methods.decoupling): BatchNorm in train mode, the cosine schedule
stepped before each epoch, the last epoch kept."""

import torch
from torch import nn

from ltbench_methods.common import classifier_stage2_settings
from ltbench_methods.decoupling import ClassifierStage, places_lt_stage2


class LearnableWeightScaling(ClassifierStage):
    """LWS: CE backbone and classifier frozen, per-class scales learned class-balanced (Kang et al., ICLR 2020)."""

    name, display_name = "lws", "LWS"
    # classifier-balancing's ImageNet-LT cls_lws.yaml: as cRT but 5 epochs
    hyperparameters = classifier_stage2_settings("lws", epochs=5, config="config/ImageNet_LT/cls_lws.yaml")
    by_dataset = {"inat2018": {"weight_decay": (1e-4, "classifier-balancing config/iNaturalist18/cls_lws.yaml L15: "
                                                "weight_decay 0.0001")},
                  "places_lt": places_lt_stage2("config/Places_LT/cls_lws.yaml")}

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        self.classifier = nn.Linear(feature_dim, self.num_classes).requires_grad_(False)
        self.scales = nn.Parameter(torch.ones(self.num_classes))

    def load_stage1(self, stage1):
        self.classifier.load_state_dict(stage1.classifier.state_dict())

    def logits(self, features):
        # the bias is scaled with the weights, as classifier-balancing's TauNormClassifier does
        return self.classifier(features) * self.scales
