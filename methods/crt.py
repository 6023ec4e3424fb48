"""Classifier re-training, cRT (Kang et al., ICLR 2020): keep the representation of a CE run,
re-initialise the classifier at random and train only it with class-balanced sampling.

Stage 2 runs as classifier-balancing's run_networks.py runs it (ltbench_methods.decoupling):
the frozen backbone's BatchNorm in train mode (`crt_bn_train`) and the cosine schedule stepped
before each epoch, so the last epoch trains at lr 0 (`crt_lr_step_first`).
"""

from torch import nn

from ltbench_methods.common import classifier_stage2_settings
from ltbench_methods.decoupling import ClassifierStage, places_lt_stage2


class ClassifierRetraining(ClassifierStage):
    """cRT: CE backbone frozen, classifier re-trained with class-balanced sampling (Kang et al., ICLR 2020)."""

    name, display_name = "crt", "cRT"
    # classifier-balancing's ImageNet-LT cls_crt.yaml: lr 0.2 cosine to 0, batch 512, 10 epochs,
    # wd 5e-4, ClassAwareSampler with 4 images per class draw
    hyperparameters = classifier_stage2_settings("crt", epochs=10, config="config/ImageNet_LT/cls_crt.yaml")
    by_dataset = {
        "inat2018": {"epochs": (30, "classifier-balancing config/iNaturalist18/cls_crt.yaml L34: num_epochs 30"),
                     "weight_decay": (1e-4, "classifier-balancing config/iNaturalist18/cls_crt.yaml L15: "
                                      "weight_decay 0.0001")},
        "places_lt": places_lt_stage2("config/Places_LT/cls_crt.yaml"),
    }

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        # a fresh nn.Linear, as classifier-balancing's load_model skips the stage-1
        # DotProductClassifier (run_networks.py L678-684) and keeps its own init
        self.classifier = nn.Linear(feature_dim, self.num_classes)

    def logits(self, features):
        return self.classifier(features)
