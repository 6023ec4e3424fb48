"""RIDE + distill: its loss against a plain-float re-derivation of frank-xwang/RIDE-LongTailRecognition's
RIDELossWithDistill (model/loss.py L249-284), loop and all; its protocol (the student's 20-epoch
warm-up, the 6-expert `ride` teacher of the same spec) and its card."""

import math

import pytest
import torch

from ltbench import registry
from ltbench.card import protocol_card
from ltbench.cli import main
from ltbench.method import Batch
from ltbench.sweep import resolve
from ltbench.teacher import TEACHER_RUN_ID, teacher_spec
from ltbench_methods.ride_distill import RIDEDistill, distillation_loss, ride_distill_loss
from test_methods_losses import COUNTS, progress, ref_effective_weights
from test_methods_ride import ref_diversity_weights, ref_ride, softmax


def ref_kl(teacher_rows, student_rows, temperature):
    """KL(softmax(t / T) || softmax(z / T)) summed over classes, averaged over the batch."""
    total = 0.0
    for t, z in zip(teacher_rows, student_rows):
        q = softmax([v / temperature for v in t])
        p = softmax([v / temperature for v in z])
        total += sum(qc * (math.log(qc) - math.log(pc)) for qc, pc in zip(q, p))
    return total / len(teacher_rows)


def ref_distill_loop(ride, teacher_rows, student_rows, experts, temperature, factor):
    """loss.py L271-284 as written: per student expert, the whole RIDE loss, then T^2 KL."""
    loss = 0.0
    for _ in range(experts):
        loss += 1.0 * ride  # ride_loss_factor 1.0
        loss += factor * temperature * temperature * ref_kl(teacher_rows, student_rows, temperature)
    return loss


def logits(n, seed, scale=10.0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, len(COUNTS), generator=gen, dtype=torch.float64) * scale


@pytest.mark.parametrize("temperature", [1.0, 1.5, 4.0])
def test_the_distillation_term_is_t_squared_kl_from_the_teacher(temperature):
    student, teacher = logits(9, 0), logits(9, 1)
    got = distillation_loss(student, teacher, temperature).item()
    assert got == pytest.approx(temperature**2 * ref_kl(teacher.tolist(), student.tolist(), temperature), rel=1e-9)
    assert distillation_loss(teacher, teacher, temperature).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("experts", [1, 3, 4])
@pytest.mark.parametrize("factor", [1.0, 0.5])
def test_the_loss_adds_ride_and_distillation_once_per_student_expert(experts, factor):
    student, teacher = logits(6, 2), logits(6, 3)
    got = ride_distill_loss(torch.tensor(2.5, dtype=torch.float64),
                            distillation_loss(student, teacher, 1.5), experts, factor).item()
    want = ref_distill_loop(2.5, teacher.tolist(), student.tolist(), experts, 1.5, factor)
    assert got == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("epoch", [159, 160])
def test_the_method_loss_against_the_original_formula(epoch):
    """The method's loss of a batch: its cosines and a fixed teacher prediction, through the
    whole RIDE loss (before and after re-weighting) and the distillation term, E times."""
    method = RIDEDistill(RIDEDistill.defaults(), COUNTS, feature_dim=8)
    gen = torch.Generator().manual_seed(4)
    features = torch.randn(10, 3, 8, generator=gen)
    labels = torch.randint(0, len(COUNTS), (10,), generator=gen)
    images = torch.randn(10, 1, generator=gen)
    teacher_logits = torch.randn(10, len(COUNTS), generator=gen) * 8
    seen = []
    method.load_teacher(lambda x: seen.append(x) or teacher_logits)
    heads = [torch.nn.functional.normalize(h.weight.detach().double(), dim=0) for h in method.classifiers]
    cos = torch.stack([torch.nn.functional.normalize(features[:, k].double(), dim=1) @ heads[k] for k in range(3)], 1)
    reweighting = epoch >= 160
    temperatures = ref_diversity_weights(COUNTS, 0.05) if reweighting else [1.0] * len(COUNTS)
    weights = ref_effective_weights(COUNTS, 0.9999) if reweighting else None
    ride = ref_ride(cos, labels, COUNTS, -0.45, temperatures, weights)
    student = (30.0 * cos.mean(1)).tolist()

    got = method.loss(lambda _: features, {"main": Batch([images], labels)}, progress(epoch)).item()
    assert got == pytest.approx(ref_distill_loop(ride, teacher_logits.tolist(), student, 3, 1.5, 1.0), rel=1e-5)
    assert len(seen) == 1 and seen[0] is images  # the teacher sees the student's batch itself
    recorded = method.take_recorded()
    assert float(recorded["ride"]) == pytest.approx(ride, rel=1e-5)
    assert float(recorded["distill"]) == pytest.approx(2.25 * ref_kl(teacher_logits.tolist(), student, 1.5), rel=1e-5)


def test_a_method_without_its_teacher_loaded_says_so():
    method = RIDEDistill(RIDEDistill.defaults(), COUNTS, feature_dim=8)
    batch = {"main": Batch([torch.zeros(2, 1)], torch.tensor([0, 1]))}
    with pytest.raises(RuntimeError, match="distils from a ride teacher, and none was loaded"):
        method.loss(lambda _: torch.randn(2, 3, 8), batch, progress(0))


def test_the_teacher_is_a_six_expert_ride_run_of_the_same_spec_with_its_own_warm_up():
    student = resolve("ride_distill", "cifar100_lt", 100, 0, "paper")
    teacher = teacher_spec(student)
    assert student.preset == "paper" and student.params["warmup_epochs"] == 20
    # configs/config_imbalance_cifar100_ride_teacher.json: the RIDE recipe with 6 experts
    assert teacher == resolve("ride", "cifar100_lt", 100, 0, "paper", {"num_experts": "6"})
    assert teacher.params["warmup_epochs"] == 5 and teacher.preset == "custom"
    assert student.own_hyperparameters[TEACHER_RUN_ID] == teacher.run_id
    # a preset shrinks both alike; a --set the student departs with, the teacher follows
    quick = resolve("ride_distill", "fashion_mnist_lt", 100, 1, "quick")
    assert teacher_spec(quick) == resolve("ride", "fashion_mnist_lt", 100, 1, "quick", {"num_experts": "6"})
    warm = resolve("ride_distill", "cifar100_lt", 100, 0, "paper", {"warmup_epochs": "3", "epochs": "50"})
    assert (teacher_spec(warm).params["warmup_epochs"], teacher_spec(warm).epochs) == (3, 50)
    # on ImageNet-LT both warm up for 5 epochs (config_imagenet_lt_resnet50_distill_ride.json)
    fixed = registry.dataset("imagenet_lt").fixed_imbalance_factor
    imagenet = resolve("ride_distill", "imagenet_lt", fixed, 0, "paper")
    assert imagenet.params["warmup_epochs"] == teacher_spec(imagenet).params["warmup_epochs"] == 5


def test_another_teacher_is_another_run():
    plain = resolve("ride_distill", "cifar10_lt", 100, 0, "quick")
    four = resolve("ride_distill", "cifar10_lt", 100, 0, "quick", {"teacher_experts": "4"})
    assert four.run_id != plain.run_id and four.preset == "custom"
    assert teacher_spec(four).own_hyperparameters["num_experts"] == 4
    assert four.own_hyperparameters[TEACHER_RUN_ID] == teacher_spec(four).run_id != plain.own_hyperparameters[
        TEACHER_RUN_ID]
    # the student's own settings leave its teacher alone
    hotter = resolve("ride_distill", "cifar10_lt", 100, 0, "quick", {"distill_temperature": "3"})
    assert teacher_spec(hotter) == teacher_spec(plain) and hotter.run_id != plain.run_id
    # nor does its optimisation: a student tuned on its lr and weight decay distils from the one teacher
    tuned = resolve("ride_distill", "cifar10_lt", 100, 0, "quick", {"lr": "0.03", "weight_decay": "1e-3"})
    assert tuned.params["lr"] == 0.03 and tuned.run_id != plain.run_id
    assert teacher_spec(tuned) == teacher_spec(plain)


def test_the_card_sources_every_default(capsys):
    assert main(["list", "ride_distill"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "RIDE distilled from a frozen 6-expert RIDE teacher" in said
    assert "Distils from a frozen teacher: a ride run of the same spec" in said
    rows = {(row.owner, row.name): row for row in protocol_card("ride_distill")}
    warmup = rows["trainer", "warmup_epochs"]
    assert (warmup.values["cifar100_lt"], warmup.values["imagenet_lt"]) == ("20", "5")
    assert "config_imbalance_cifar100_distill_ride.json lr_scheduler.args: warmup_epoch 20" in warmup.sources["cifar100_lt"]
    assert "config_imagenet_lt_resnet50_distill_ride.json" in warmup.sources["imagenet_lt"]
    for key, shown in (("teacher_experts", "distill_arch.args: num_experts 6"),
                       ("distill_temperature", "distill_temperature 1.5"),
                       ("distill_factor", "additional_distill_loss_factor=1.0"),
                       ("diversity_factor", "config_imbalance_cifar100_distill_ride.json loss.args")):
        assert shown in rows["ride_distill", key].sources["cifar100_lt"], key
