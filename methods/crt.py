"""Classifier re-training, cRT (Kang et al., ICLR 2020): keep the representation of a CE run,
re-initialise the classifier at random and train only it with class-balanced sampling."""

import torch.nn.functional as F
from torch import nn

from ltbench.method import Draw, Method
from ltbench_methods.ce import CrossEntropy
from ltbench_methods.common import check_classifier_stage2, classifier_stage2


class ClassifierRetraining(Method):
    name = "crt"
    summary = "cRT: CE backbone frozen, classifier re-trained with class-balanced sampling (Kang et al., ICLR 2020)"
    stage1 = CrossEntropy
    draws = {"main": Draw(sampler="class_balanced")}
    # classifier-balancing's ImageNet-LT cls_crt.yaml: lr 0.2 cosine to 0, batch 512, 10 epochs,
    # wd 5e-4, ClassAwareSampler with 4 images per class draw
    hyperparameters = {"crt_lr": 0.2, "crt_epochs": 10, "crt_batch_size": 512, "crt_momentum": 0.9,
                       "crt_weight_decay": 5e-4, "crt_per_class": 4, "crt_bn_train": False}

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        self.classifier = nn.Linear(feature_dim, self.num_classes)

    @classmethod
    def check(cls, params):
        check_classifier_stage2(params, "crt")

    def stage2(self):
        # BatchNorm stays in eval mode by default: the features the classifier learns on are the
        # ones it is tested on, and the backbone stays exactly the CE run's. The released code
        # leaves BN in train mode (running stats drift to class-balanced batches): crt_bn_train.
        return {**classifier_stage2(self.hp, "crt"), "bn_train": self.hp["crt_bn_train"]}

    def logits(self, features):
        return self.classifier(features)

    def loss(self, backbone, batches, progress):
        batch = batches["main"]
        return F.cross_entropy(self.logits(backbone(batch.views[0])).float(), batch.labels)
