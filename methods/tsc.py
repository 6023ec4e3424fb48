"""TSC, targeted supervised contrastive learning (Li, Cao, Yuan, Fan, Yang, Feris, Indyk and
Katabi, CVPR 2022): KCL's k-positive contrastive loss plus one fixed target per class, points
spread uniformly over the hypersphere before training (ltbench.targets); each anchor also
takes its class's target as a positive and every target into its softmax's denominator, so the
classes, the tail's included, converge to distinct, evenly spaced points. Which class owns
which target is re-decided every step by the Hungarian matching of the classes' moving-average
centroids to the targets. Stage 2 trains a linear classifier with class-balanced sampling on
the frozen backbone, as KCL's (ltbench_methods.kcl).

    L(z_i) = L_class(z_i) + w * L_target(z_i),
    L_target(z_i) = -1 / (2 + k_i) * log( exp(z_i . t_{c(y_i)} / tau) / Z_i ),
    Z_i = sum_{a != i} exp(z_i . z_a / tau) + sum_t exp(z_i . t / tau)

L_class is KCL's term with the targets in its denominator Z_i and its count 1 + k_i + 1.

Follows LTH14/targeted-supcon at commit c4f15ebf67756088f40b672d7612b341529c7447:
moco/builder.py (class KCL with targeted=True, L168-433: the targets as negatives L338-341,
the centroids and the matching L354-380, the separate target term and its weight L382-386,
L407-428), target_generation.py (the targets), main_moco_supcon_imba.py (the first half of the
epochs trained without targets, L295-322) and the README's command (--epochs 400 --K 6
--targeted --tr 1 --sep_t --tw 0.2). The differences ltbench_methods.kcl lists hold here too
(no momentum encoder or queue: in-batch positives and negatives; the probe of stage 1; the
views; the last epoch), and:

- The two halves: the code trains KCL for half the epochs, then re-creates the optimiser and
  restarts the cosine schedule for the targeted half. ltbench keeps one optimiser and one
  schedule and switches the target term on at `targeted_from` of the run: the lr of the
  targeted half is the second half of one cosine, not a fresh one.
- The centroids: the code averages the query embeddings of the batch gathered from every GPU
  (L361-367); ltbench the first view's, the same images, gathered from every rank as there, so
  every rank keeps the same centroids and matches the classes to the same targets.
- The targets: the code ships optimal_1000_128_analytical.npy for ImageNet-LT; ltbench computes
  them for any class count and width with target_generation.py's optimisation (seeded, in
  float64) and keeps them in the checkpoint.
"""

import torch
import torch.nn.functional as F

from ltbench import distributed
from ltbench.settings import Setting
from ltbench.targets import GENERATION, assign_targets, hypersphere_targets
from ltbench_methods.kcl import (APPENDIX, BUILDER, MAIN, README, KCLStage1, LinearStage, global_batch,
                                 k_positive_contrastive_loss, linear_stage_settings)


UNCONFIRMED = {"places_lt": "the repository and the paper's appendix give no Places-LT protocol"}


class TSCStage1(KCLStage1):
    """TSC stage 1: k-positive contrastive representation pulled towards uniform class targets (Li et al., CVPR 2022)."""

    name, display_name = "tsc_stage1", "TSC stage 1"
    hyperparameters = {
        **KCLStage1.hyperparameters,
        "target_weight": Setting(0.2, "weight w of the target term", low=0, high=100,
                                 source=f"{README} L66: --tw 0.2 (with --sep_t, a separate term)"),
        "targeted_from": Setting(0.5, "fraction of the epochs after which the targets join the loss", low=0, high=1,
                                 source=f"{MAIN} L295-298: pretrain_epochs = epochs // 2 of KCL, then TSC"),
        "centroid_momentum": Setting(0.9, "momentum of the class centroids the matching reads", low=0, below=1,
                                     source=f"{BUILDER} L366: 0.9 * centroid + 0.1 * the batch's class mean"),
        "target_seed": Setting(0, "seed of the targets' optimisation", low=0, high=2**31 - 1,
                               source=f"{GENERATION} L23: torch.randn, unseeded; ltbench seeds it so every run "
                                      "of a class count and width has the same targets"),
        "target_iterations": Setting(10_000, "Adam iterations spreading the targets", low=0, high=1_000_000,
                                     source=f"{GENERATION} L28: N_iter = 10000"),
    }
    trainer_defaults = {**KCLStage1.trainer_defaults, "epochs": 400}
    trainer_sources = {**KCLStage1.trainer_sources,
                       "epochs": f"{APPENDIX}: 400 epochs on ImageNet-LT and iNaturalist; {README} L66: --epochs 400"}
    unconfirmed_protocol = UNCONFIRMED

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        targets = hypersphere_targets(self.num_classes, hp["projection_dim"], hp["target_seed"],
                                      hp["target_iterations"])
        self.register_buffer("targets", targets)
        # moco/builder.py L226-228: random unit centroids until the classes' batches move them
        self.register_buffer("centroids", F.normalize(torch.randn(self.num_classes, hp["projection_dim"]), dim=1))

    @torch.no_grad()
    def update_centroids(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """Each class present in the batch: its centroid moves towards the normalised mean of its
        embeddings and is normalised again (moco/builder.py L364-367)."""
        member = F.one_hot(labels, self.num_classes).to(embeddings.dtype)
        present = member.sum(0) > 0
        means = F.normalize(member.T @ embeddings, dim=1)
        m = self.hp["centroid_momentum"]
        moved = F.normalize(m * self.centroids + (1 - m) * means, dim=1)
        self.centroids.copy_(torch.where(present[:, None], moved, self.centroids))

    def contrastive_terms(self, embeddings, labels, progress):
        if progress is not None and progress.epoch < round(self.hp["targeted_from"] * progress.epochs):
            return super().contrastive_terms(embeddings, labels, progress)
        n = len(labels) // 2
        self.update_centroids(distributed.gather(embeddings[:n].detach()), distributed.gather(labels[:n]))
        assigned = assign_targets(self.centroids, self.targets)
        target_positive = F.one_hot(assigned[labels], self.num_classes).bool()
        contrast, first, positives = global_batch(embeddings, labels, 2, self.hp["k"])
        class_term, target_term = k_positive_contrastive_loss(embeddings, positives, self.hp["temperature"],
                                                              self.targets, target_positive, contrast, first)
        return {"loss_class": class_term, "loss_target": self.hp["target_weight"] * target_term}


class TSC(LinearStage):
    """TSC: targeted supervised contrastive backbone, linear classifier re-trained class-balanced (Li et al., CVPR 2022)."""

    name, display_name = "tsc", "TSC"
    stage1 = TSCStage1
    hyperparameters = linear_stage_settings("tsc")
    unconfirmed_protocol = UNCONFIRMED
