"""The hybrid network of Wang et al. (CVPR 2021), shared by SC-hybrid and PSC-hybrid.

One backbone, two branches trained together:

    L = alpha * L_feature(B_feature) + (1 - alpha) * L_CE(B_classifier),  alpha = 1 - (T / T_max)^2

The feature branch takes an instance-sampled batch in two augmented views through an MLP
projection head to L2-normalised embeddings; the classifier branch takes a class-balanced
batch through a linear classifier. Only the classifier branch is used at test time.
Subclasses say what L_feature is.

The paper's code is not public; every value below is the paper's text where it gives one
(its implementation details for long-tailed CIFAR: random cropping to 32 x 32, horizontal
flip and random grayscale with probability 0.2 for both branches; SGD m 0.9, wd 1e-4, batch
512, lr 0.5 divided by 10 at epochs 120 and 160 of 200), and says so where it does not. Both
branches take the same augmentation by default (`classifier_augment`); `standard` gives the
classifier branch the CE baselines' crop and flip alone.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ltbench.data.augment import CONTRASTIVE_CROPS
from ltbench.data.samplers import SAMPLERS
from ltbench.method import Draw, Method, Progress
from ltbench.settings import Search, Setting

PAPER = "Wang et al. CVPR 2021, implementation details (long-tailed CIFAR)"
NOT_GIVEN = "not given in the paper; "

# The paper's T is "the current epoch"; here it counts from 1, as SupCon's training loop
# does, so alpha starts just below 1 and the last epoch trains the classifier alone (alpha 0).
# alpha holds for a whole epoch, as in the paper, rather than moving every step.
ALPHA_SCHEDULES = {
    "parabolic": lambda t: 1 - t**2,  # the paper's
    "linear": lambda t: 1 - t,
    # an ablation: the same network, draws and BatchNorm batches with the feature loss weighted
    # 0, i.e. what the class-balanced classifier branch achieves on its own
    "classifier_only": lambda t: 0.0,
}

# the paper's two temperatures, 0.1 (SC and PSC on CIFAR-100) and 1 (PSC on CIFAR-10), both inside
TEMPERATURE_SEARCH = Search(0.05, 1.0, log=True, source=f"ltbench default: log-uniform over 0.05 .. 1, which holds "
                            f"{PAPER}'s tau = 0.1 (SC; PSC on CIFAR-100) and tau = 1 (PSC on CIFAR-10)")


class ProjectionHead(nn.Module):
    """SupCon's MLP head with one hidden layer; `hidden=0` keeps the backbone's width, as
    SupCon's `Linear(dim_in, dim_in)` does. `batch_norm` puts a BatchNorm1d after the hidden
    layer, as BCL's heads have it (Linear, BatchNorm1d, ReLU, Linear)."""

    def __init__(self, in_features: int, hidden: int, out_features: int, batch_norm: bool = False):
        super().__init__()
        hidden = hidden or in_features
        norm = [nn.BatchNorm1d(hidden)] if batch_norm else []
        self.mlp = nn.Sequential(nn.Linear(in_features, hidden), *norm, nn.ReLU(inplace=True),
                                 nn.Linear(hidden, out_features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(features).float(), dim=1)


class HybridNetwork(Method):
    hyperparameters = {
        "alpha_schedule": Setting("parabolic", "alpha over training: the paper's 1 - (T/T_max)^2, linear, or "
                                  "classifier_only (an ablation)", choices=tuple(ALPHA_SCHEDULES),
                                  source=f"{PAPER}: alpha = 1 - (T / T_max)^2",
                                  search=Search(choices=("parabolic", "linear"), source="ltbench default: the paper's "
                                                "parabolic decay and a linear one, both moving from the feature loss to "
                                                "the classifier; classifier_only is an ablation, not a configuration")),
        "feature_sampler": Setting("instance", "sampler of the feature branch's batch", choices=tuple(SAMPLERS),
                                   source="Wang et al. CVPR 2021, the hybrid network: instance-balanced B_SC"),
        "classifier_sampler": Setting("class_balanced", "sampler of the classifier branch's batch",
                                      choices=tuple(SAMPLERS),
                                      source="Wang et al. CVPR 2021, the hybrid network: class-balanced B_CE"),
        "projection_dim": Setting(128, "width of the normalised embedding", low=1, high=65_536,
                                  source=NOT_GIVEN + "SupContrast networks/resnet_big.py feat_dim=128"),
        "projection_hidden": Setting(0, "hidden width of the projection MLP; 0: the backbone's feature width",
                                     low=0, high=65_536, source="Wang et al.: an MLP with one hidden layer; its width "
                                     "as SupContrast's head, Linear(dim_in, dim_in)"),
        "contrastive_crop": Setting("pad", "pad: RandomCrop(32, padding 4); resized: SupCon's RandomResizedCrop",
                                    choices=tuple(CONTRASTIVE_CROPS),
                                    source=f"{PAPER}: random cropping to 32 x 32 (fits both)"),
        "grayscale_p": Setting(0.2, "probability of random grayscale on both branches' views", low=0, high=1,
                               source=f"{PAPER}: random grayscale with probability 0.2"),
        # SupCon's ColorJitter(0.4, 0.4, 0.4, 0.1) is 0.4; the paper lists none
        "color_jitter": Setting(0.0, "ColorJitter strength on both branches' views", low=0, high=1,
                                source=f"{PAPER}: lists crop, flip and grayscale only"),
        "classifier_augment": Setting("same", "the classifier branch's views: same (the feature branch's crop, flip "
                                      "and grayscale) or standard (crop and flip, as the CE baselines)",
                                      choices=("same", "standard"),
                                      source=f"{PAPER}: the same augmentation for both branches",
                                      earlier="standard"),
    }
    # SGD m 0.9, wd 1e-4, batch 512, lr 0.5, /10 at epochs 120 and 160 of 200. The paper
    # describes no warm-up, so there is none (the CE protocol's 5 epochs would change it). The
    # step schedule is stated here, not left to the defaults, so that it wins over a dataset's
    # own protocol (the image datasets' cosine) as every other value here does.
    trainer_defaults = {
        "batch_size": 512,
        "lr": 0.5,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "schedule": "step",
        "warmup_epochs": 0,
        "milestones": [0.6, 0.8],
        "lr_factors": [0.1, 0.01],
        "flip": True,
    }
    trainer_sources = {
        "batch_size": f"{PAPER}: batch size 512 for SC and PSC",
        "lr": f"{PAPER}: initial learning rate 0.5",
        "momentum": f"{PAPER}: SGD with a momentum of 0.9",
        "weight_decay": f"{PAPER}: SGD, momentum 0.9, weight decay 1e-4",
        "schedule": f"{PAPER}: decayed by a factor of 10 at the 120th and 160th epoch of 200 (the same fractions "
                    "on the other datasets: their schedule is not given in what was checked)",
        "warmup_epochs": f"{PAPER}: no warm-up described",
        "milestones": f"{PAPER}: epochs 120 and 160 of 200",
        "lr_factors": f"{PAPER}: a factor of 10 at each",
        "flip": f"{PAPER}: horizontal flip, for both branches",
    }
    # the paper's two draws; an instance builds its own from the sampler and augmentation settings
    draws = {"feature": Draw("instance", views=2, augment="contrastive"),
             "classifier": Draw("class_balanced", augment="contrastive")}

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        views = {"crop": hp["contrastive_crop"], "grayscale_p": hp["grayscale_p"], "color_jitter": hp["color_jitter"]}
        same = hp["classifier_augment"] == "same"
        self.draws = {
            "feature": Draw(hp["feature_sampler"], views=2, augment="contrastive", augment_options=views),
            "classifier": Draw(hp["classifier_sampler"], views=1, augment="contrastive" if same else "standard",
                               augment_options=views if same else {}),
        }
        self.projection = ProjectionHead(feature_dim, hp["projection_hidden"], hp["projection_dim"])
        self.classifier = nn.Linear(feature_dim, self.num_classes)

    def alpha(self, progress: Progress) -> float:
        return ALPHA_SCHEDULES[self.hp["alpha_schedule"]]((progress.epoch + 1) / progress.epochs)

    def feature_loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, backbone, batches, progress):
        feature, classifier = batches["feature"], batches["classifier"]
        # one pass through the backbone, so BatchNorm sees both branches' images together
        images = torch.cat([*feature.views, *classifier.views])
        contrast_features, class_features = backbone(images).split(
            [len(feature.views) * len(feature.labels), len(classifier.labels)])
        # bf16 rounds a cosine by up to ~0.4 %; divided by a temperature of 0.1 that is logit
        # noise of ~0.04 inside exp(): the head and the feature loss run in fp32
        with torch.autocast(images.device.type, enabled=False):
            embeddings = self.projection(contrast_features.float())
            l_feature = self.feature_loss(embeddings, feature.labels.repeat(len(feature.views)))
        l_ce = F.cross_entropy(self.classifier(class_features).float(), classifier.labels)
        alpha = self.alpha(progress)
        self.record(loss_feature=l_feature.detach(), loss_classifier=l_ce.detach(), alpha=alpha)
        return alpha * l_feature + (1 - alpha) * l_ce

    def logits(self, features):
        return self.classifier(features)
