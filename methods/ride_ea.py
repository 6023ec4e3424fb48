"""RIDE's expert assignment (Wang et al., ICLR 2021, Sec. 3.3, "routing"): a RIDE run's experts
and classifiers kept frozen, a small router learns, after each expert, whether the next one
would help: an image stops at the first expert the router lets it stop at, and its prediction
is the mean logits of the experts it went through.

Follows frank-xwang/RIDE-LongTailRecognition at commit ab8be5c21124612493aff87c7cf235d950bda178,
model/ldam_drw_resnets/ea_resnet_cifar.py (EAResNet.py on the image datasets) and the "-EA"
configs (configs/config_imbalance_cifar100_ride_ea.json, config_imagenet_lt_resnet50_ride_ea.json,
config_iNaturalist_resnet50_ride_ea.json), which load the stage-1 weights
(`resume_state_dict_only`) and train only the `expert_help_pred` layers (L151-156). After
expert i (of k = 1 .. E - 1), with z_i the mean logits of experts 1..i and f_i expert i's
pooled feature (L194-207):

    help_i = fc([top-K values of z_i, relu(W_i f_i / |f_i|)])

one hidden layer W_i per expert (16 units, L138) and one fc shared by all (L141). In training
every image goes through every expert; help_i's target is "the first i experts are wrong and
a later cumulative prediction is right" (L223-231), under binary cross-entropy with a weight
on the positives (`pos_weight`), averaged over the E - 1 decisions. In evaluation an image
goes on to expert i + 1 while sigmoid(help_i) > 0.5 (L236-250).

Differences from the original, and why:

- Compute: the original runs an expert only on the images routed to it; ltbench's backbone
  computes every expert's features, and the router masks them, so the result is the same but
  the recorded forward FLOPs are all experts' (an upper bound). The mean number of experts the
  router gives a validation image is recorded in the result's calibration column.
- Top-K on datasets of fewer classes than K (CIFAR-10, Fashion-MNIST; RIDE's configs are for
  100 classes and more): all classes are taken.
- Nesterov momentum, as for RIDE's stage 1 (ltbench_methods.ride).
- Initialisation: the CIFAR model applies kaiming_normal_ to the router's nn.Linear weights
  (ea_resnet_cifar.py L158); EAResNet.py leaves them at nn.Linear's own. Kaiming normal is used
  on every dataset.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ltbench.data.datasets import has_validation
from ltbench.errors import UserError
from ltbench.experts import RIDE
from ltbench.method import Draw, Method
from ltbench.settings import Setting, Stage2Plan
from ltbench_methods.common import with_dataset_defaults
from ltbench_methods.ride import RIDEExperts

CIFAR_CONFIG = f"{RIDE} configs/config_imbalance_cifar100_ride_ea.json"
IMAGENET_CONFIG = f"{RIDE} configs/config_imagenet_lt_resnet50_ride_ea.json"
INAT_CONFIG = f"{RIDE} configs/config_iNaturalist_resnet50_ride_ea.json"
MODEL = f"{RIDE} model/ldam_drw_resnets/ea_resnet_cifar.py"


def route(expert_logits: torch.Tensor, help_logit, threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """The routed prediction of expert_logits [batch, experts, classes]: each image takes experts
    in order while `help_logit(i, mean logits of experts 0..i)` (for i = 0 .. E - 2) says the next
    helps (sigmoid > threshold). Returns the mean logits of the experts each image took, and
    how many it took."""
    total, count = expert_logits[:, 0], torch.ones(len(expert_logits), device=expert_logits.device)
    active = torch.ones(len(expert_logits), dtype=torch.bool, device=expert_logits.device)
    for i in range(1, expert_logits.shape[1]):
        active = active & (torch.sigmoid(help_logit(i - 1, total / count[:, None])) > threshold)
        total = total + active[:, None] * expert_logits[:, i]
        count = count + active
    return total / count[:, None], count


def router_targets(expert_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[batch, experts - 1]: whether the cumulative prediction of experts 0..i is wrong and that
    of some later 0..j is right (ea_resnet_cifar.py L221-228)."""
    correct = expert_logits.cumsum(1).argmax(2) == labels[:, None]
    later = correct.flip(1).cummax(1).values.flip(1)  # any right from j on
    return ~correct[:, :-1] & later[:, 1:]


class RIDERouter(Method):
    """RIDE-EA, a router that stops each image at the first RIDE expert it needs (Wang et al., ICLR 2021)."""

    name, display_name = "ride_ea", "RIDE-EA"
    stage1 = RIDEExperts
    # "balanced": true in the EA configs: BalancedSampler draws a class uniformly, then an image
    # of it (data_loader/cifar_data_loaders.py L60-90), an epoch as long as the training set
    draws = {"main": Draw(sampler="class_balanced")}
    hyperparameters = {
        "ea_epochs": Setting(5, "router training epochs", low=1, high=100_000,
                             source=f"{CIFAR_CONFIG} trainer: epochs 5"),
        "ea_batch_size": Setting(512, "router training batch size", low=1, high=1_000_000,
                                 source=f"{CIFAR_CONFIG} data_loader.args: batch_size 512"),
        "ea_lr": Setting(0.01, "router learning rate (cosine to 0)", above=0, high=1e3,
                         source=f"{CIFAR_CONFIG} optimizer.args: lr 0.01; lr_scheduler: CosineAnnealingLR T_max 5"),
        "ea_momentum": Setting(0.9, "router SGD momentum", low=0, below=1,
                               source=f"{CIFAR_CONFIG} optimizer.args: momentum 0.9 (nesterov true)"),
        "ea_weight_decay": Setting(5e-4, "router weight decay", low=0, high=1,
                                   source=f"{CIFAR_CONFIG} optimizer.args: weight_decay 5e-4"),
        "top_choices": Setting(30, "K, the largest mean logits the router reads", low=1, high=100_000,
                               source=f"{CIFAR_CONFIG} arch.args: top_choices_num 30"),
        "pos_weight": Setting(100.0, "weight of the positive targets (the next expert helps) in the router's BCE",
                              above=0, high=1e6, source=f"{CIFAR_CONFIG} arch.args: pos_weight 100"),
        "hidden": Setting(16, "units of each expert's hidden router layer", low=1, high=100_000,
                          source=f"{MODEL} L138: expert_hidden_fc_output_dim = 16"),
        "threshold": Setting(0.5, "go on to the next expert while sigmoid(help) exceeds this", above=0, below=1,
                             source=f"{MODEL} L242: torch.sigmoid(expert_help_pred) > 0.5"),
    }
    by_dataset = {name: {"top_choices": (50, f"{config} arch.args: top_choices_num 50")}
                  for name, config in (("imagenet_lt", IMAGENET_CONFIG), ("inat2018", INAT_CONFIG))}

    @classmethod
    def settings(cls, dataset):
        return with_dataset_defaults(super().settings(dataset), dataset, cls.by_dataset)

    def load_stage1(self, stage1):
        experts = stage1.hp["num_experts"]
        if experts < 2:
            raise UserError(f"{self.name} routes between experts, and its stage 1 has {experts}",
                            hint="set ride.num_experts to 2 or more")
        self.experts = stage1.requires_grad_(False)  # the trained classifiers, frozen (L151-156)
        self.top_k = min(self.hp["top_choices"], self.num_classes)
        hidden = self.hp["hidden"]
        self.hidden_layers = nn.ModuleList(nn.Linear(self.feature_dim, hidden) for _ in range(experts - 1))
        self.decide = nn.Linear(hidden + self.top_k, 1)
        for layer in (*self.hidden_layers, self.decide):
            nn.init.kaiming_normal_(layer.weight)

    def stage2(self):
        epochs = self.hp["ea_epochs"]
        # CosineAnnealingLR stepped after each epoch (trainer/trainer.py L174-175): the first
        # epoch at the full lr
        return Stage2Plan(epochs=epochs, batch_size=self.hp["ea_batch_size"], settings={
            "lr": self.hp["ea_lr"], "momentum": self.hp["ea_momentum"], "weight_decay": self.hp["ea_weight_decay"],
            "schedule": "cosine", "warmup_epochs": 0, "eval_every": epochs})

    def help_logit(self, features: torch.Tensor, i: int, mean_logits: torch.Tensor) -> torch.Tensor:
        """ea_resnet_cifar.py L194-207: after expert i, from its feature and the mean logits so far."""
        own = F.relu(self.hidden_layers[i](F.normalize(features[:, i].float(), dim=1)))
        return self.decide(torch.cat([mean_logits.float().topk(self.top_k, dim=1).values, own], 1)).squeeze(1)

    def expert_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.experts.hp["scale"] * self.experts.cosines(features)

    def loss(self, backbone, batches, progress):
        batch = batches["main"]
        features = backbone(batch.views[0])
        logits = self.expert_logits(features)
        targets = router_targets(logits, batch.labels).float()
        means = logits.cumsum(1) / torch.arange(1, logits.shape[1] + 1, device=logits.device)[:, None]
        helps = torch.stack([self.help_logit(features, i, means[:, i]) for i in range(targets.shape[1])], 1)
        self.record(helps=targets.mean().detach())
        weight = torch.tensor(self.hp["pos_weight"], device=helps.device)
        # mean over the E - 1 decisions of each one's batch mean (L227-234)
        return F.binary_cross_entropy_with_logits(helps, targets, pos_weight=weight)

    def logits(self, features):
        return self.routed(features)[0]

    def routed(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return route(self.expert_logits(features), lambda i, mean: self.help_logit(features, i, mean),
                     self.hp["threshold"])

    @torch.no_grad()
    def calibrate(self, trainer):
        """Chooses nothing: records how many experts the router gives a validation image."""
        data = trainer.data
        if not has_validation(data):
            return {}
        self.eval()
        _, count = self.routed(trainer.features(data.val_x, data.val_y))
        return {"experts_per_image_val": round(float(count.mean()), 3)}
