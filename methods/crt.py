"""Classifier re-training, cRT (Kang et al., ICLR 2020): keep the representation of a CE run,
re-initialise the classifier at random and train only it with class-balanced sampling."""

import torch.nn.functional as F
from torch import nn

from ltbench.method import Draw, Method
from ltbench_methods.ce import CrossEntropy
from ltbench.settings import Setting
from ltbench_methods.common import classifier_stage2, classifier_stage2_settings


class ClassifierRetraining(Method):
    name = "crt"
    display_name = "cRT"
    summary = "cRT: CE backbone frozen, classifier re-trained with class-balanced sampling (Kang et al., ICLR 2020)"
    stage1 = CrossEntropy
    draws = {"main": Draw(sampler="class_balanced")}
    # classifier-balancing's ImageNet-LT cls_crt.yaml: lr 0.2 cosine to 0, batch 512, 10 epochs,
    # wd 5e-4, ClassAwareSampler with 4 images per class draw
    hyperparameters = {**classifier_stage2_settings("crt", epochs=10),
                       "crt_bn_train": Setting(False, "keep the frozen backbone's BatchNorm in train mode in stage 2")}

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        self.classifier = nn.Linear(feature_dim, self.num_classes)

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
