"""SC-hybrid and PSC-hybrid (Wang et al., CVPR 2021): the feature losses against slow
per-anchor re-derivations, the alpha schedule, the two draws, and a smoke run end to end."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from ltbench import registry
from ltbench.cli import main
from ltbench.data.loader import DeviceLoader
from ltbench.errors import UserError
from ltbench.method import Batch, Progress
from ltbench.models import create_backbone
from ltbench.store import RESULT_COLUMNS, RunStore
from ltbench.sweep import resolve
from ltbench_methods.psc_hybrid import PSCHybrid, prototypical_supervised_contrastive_loss
from ltbench_methods.sc_hybrid import SCHybrid, supervised_contrastive_loss

# labels 3 and 4 occur once: with one view each, those anchors have no positive
LABELS = torch.tensor([0, 1, 0, 2, 1, 0, 3, 2, 4, 1])


def embeddings(n: int, dim: int = 16, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=1)


def slow_supcon(z, labels, tau):
    """Khosla et al. eq. 2 (L^sup_out), one anchor at a time."""
    terms = []
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        positives = [p for p in others if labels[p] == labels[i]]
        if not positives:
            continue
        denominator = sum(torch.exp(z[i] @ z[a] / tau) for a in others)
        terms.append(-sum(torch.log(torch.exp(z[i] @ z[p] / tau) / denominator) for p in positives) / len(positives))
    return sum(terms) / len(terms)


def slow_psc(z, labels, prototypes, tau, positive_in_denominator):
    """Wang et al. eq. for L_PSC, one anchor at a time."""
    p = prototypes / prototypes.norm(dim=1, keepdim=True)
    total = 0
    for i in range(len(z)):
        y = int(labels[i])
        classes = range(len(p)) if positive_in_denominator else [j for j in range(len(p)) if j != y]
        total = total + -torch.log(torch.exp(z[i] @ p[y] / tau) / sum(torch.exp(z[i] @ p[j] / tau) for j in classes))
    return total / len(z)


@pytest.mark.parametrize("views", [1, 2])
def test_supcon_matches_a_per_anchor_derivation(views):
    labels = LABELS.repeat(views)
    z1, z2 = (embeddings(len(labels)).requires_grad_() for _ in range(2))
    with torch.no_grad():
        z2.copy_(z1)
    fast = supervised_contrastive_loss(z1, labels, 0.1)
    slow = slow_supcon(z2, labels, 0.1)
    assert torch.allclose(fast, slow)
    fast.backward()
    slow.backward()
    assert torch.allclose(z1.grad, z2.grad)


def test_supcon_anchor_without_positive_adds_nothing_but_stays_a_negative():
    z = embeddings(len(LABELS))
    loners = (LABELS == 3) | (LABELS == 4)
    with_loners = supervised_contrastive_loss(z, LABELS, 0.5)
    without = supervised_contrastive_loss(z[~loners], LABELS[~loners], 0.5)
    assert with_loners > without  # the loners sit in every other anchor's denominator
    assert supervised_contrastive_loss(z[:2], torch.tensor([0, 1]), 0.5) == 0  # nobody has a positive


@pytest.mark.parametrize("positive_in_denominator", [False, True])
def test_psc_matches_a_per_anchor_derivation(positive_in_denominator):
    z = embeddings(len(LABELS)).requires_grad_()
    prototypes = torch.randn(5, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True)
    fast = prototypical_supervised_contrastive_loss(z, LABELS, prototypes, 1.0, positive_in_denominator)
    fast_grads = torch.autograd.grad(fast, (z, prototypes))
    slow = slow_psc(z, LABELS, prototypes, 1.0, positive_in_denominator)
    slow_grads = torch.autograd.grad(slow, (z, prototypes))
    assert torch.allclose(fast, slow)
    assert all(torch.allclose(a, b) for a, b in zip(fast_grads, slow_grads))
    if positive_in_denominator:  # then it is cross-entropy on cosine logits
        logits = z @ F.normalize(prototypes, dim=1).T
        assert torch.allclose(fast, F.cross_entropy(logits, LABELS))


def hybrid(cls, dataset="fashion_mnist_lt", **overrides):
    spec = resolve(cls.name, dataset, 100, 0, "smoke", overrides)
    backbone = create_backbone("resnet8_cifar", 1)
    return cls(spec.own_hyperparameters, [50, 20, 10, 5, 2], backbone.num_features), backbone


def batches(method, n=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {name: Batch([torch.randn(n, 1, 32, 32, generator=gen) for _ in range(draw.views)],
                        torch.randint(0, 5, (n,), generator=gen))
            for name, draw in method.draws.items()}


@pytest.mark.parametrize("cls", [SCHybrid, PSCHybrid])
def test_gradients_are_finite_under_bf16_autocast(cls):
    torch.manual_seed(0)
    method, backbone = hybrid(cls)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = method.loss(backbone, batches(method), Progress(3, 10, 0, 1))
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in [*backbone.parameters(), *method.parameters()]]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert method.projection.mlp[0].weight.grad.abs().sum() > 0 and method.classifier.weight.grad.abs().sum() > 0


def test_alpha_is_parabolic_in_the_epoch_and_hands_over_to_the_classifier():
    method, backbone = hybrid(SCHybrid)
    alphas = [method.alpha(Progress(e, 200, s, 10)) for e in (0, 99, 199) for s in (0, 9)]
    assert alphas == pytest.approx([1 - (1 / 200) ** 2] * 2 + [0.75] * 2 + [0.0] * 2)
    ablation, _ = hybrid(SCHybrid, alpha_schedule="classifier_only")
    assert {ablation.alpha(Progress(e, 200, 0, 10)) for e in (0, 99, 199)} == {0.0}
    loss = method.loss(backbone, batches(method), Progress(199, 200, 0, 1))  # last epoch: CE alone
    loss.backward()
    assert method.projection.mlp[0].weight.grad.abs().sum() == 0 and method.classifier.weight.grad.abs().sum() > 0


def test_spec_records_the_paper_protocol_and_the_hybrid_settings():
    sc = resolve("sc_hybrid", "cifar10_lt", 100, 0, "paper", {}).flat_params()
    assert (sc["lr"], sc["weight_decay"], sc["warmup_epochs"], sc["milestones"], sc["lr_factors"]) == (
        0.5, 1e-4, 0, [0.6, 0.8], [0.1, 0.01])
    assert resolve("sc_hybrid", "cifar10_lt", 100, 0, "paper", {}).batch_size == 512
    assert {k: sc[k] for k in ("alpha_schedule", "feature_sampler", "classifier_sampler", "projection_dim",
                               "projection_hidden", "temperature")} == {
        "alpha_schedule": "parabolic", "feature_sampler": "instance", "classifier_sampler": "class_balanced",
        "projection_dim": 128, "projection_hidden": 0, "temperature": 0.1}
    psc = {d: resolve("psc_hybrid", d, 100, 0, "paper", {}).flat_params() for d in ("cifar10_lt", "cifar100_lt", "fashion_mnist_lt")}
    assert {d: p["temperature"] for d, p in psc.items()} == {"cifar10_lt": 1.0, "cifar100_lt": 0.1, "fashion_mnist_lt": 1.0}
    assert psc["cifar10_lt"]["positive_in_denominator"] is False
    quick = resolve("sc_hybrid", "fashion_mnist_lt", 100, 0, "quick", {})
    assert (quick.batch_size, quick.params["lr"], quick.preset) == (128, 0.125, "quick")  # linear scaling
    assert resolve("ce", "fashion_mnist_lt", 100, 0, "quick", {}).params["lr"] == 0.1


def test_bad_settings_are_refused_before_training():
    with pytest.raises(UserError, match="sc_hybrid.alpha_schedule=cosine is not allowed"):
        resolve("sc_hybrid", "cifar10_lt", 100, 0, "paper", {"alpha_schedule": "cosine"})
    with pytest.raises(UserError, match="psc_hybrid.feature_sampler=balanced is not allowed"):
        resolve("psc_hybrid", "cifar10_lt", 100, 0, "paper", {"feature_sampler": "balanced"})


def test_two_contrastive_views_and_a_class_balanced_batch_per_step(fashion_mnist):
    data = registry.dataset("fashion_mnist_lt").build(fashion_mnist, 100, n_max=200)
    method, _ = hybrid(SCHybrid, color_jitter="0.4")
    loader = DeviceLoader(data, method.draws, 64, "cpu", seed=0)
    feature_labels, classifier_labels = [], []
    for step in loader.epoch():
        a, b = step["feature"].views
        assert a.shape == b.shape and not torch.equal(a, b)
        feature_labels.append(step["feature"].labels)
        classifier_labels.append(step["classifier"].labels)
    feature, classifier = torch.bincount(torch.cat(feature_labels)), torch.bincount(torch.cat(classifier_labels))
    assert feature.tolist() == data.class_counts  # instance sampling: each image once
    assert classifier.max() - classifier.min() <= 1  # class-balanced


@pytest.mark.slow
def test_smoke_run_writes_complete_rows(fashion_mnist, tmp_path):
    code = main(["run", "--methods", "sc_hybrid,psc_hybrid", "--dataset", "fashion_mnist_lt", "--if", "100",
                 "--preset", "smoke", "--device", "cpu", "--results-dir", str(tmp_path)])
    assert code == 0
    store = RunStore(tmp_path)
    got = {r["method"]: r for r in (store.read_result(i) for i in store.run_ids())}
    assert set(got) == {"sc_hybrid", "psc_hybrid"}
    for row in got.values():
        assert list(row) == RESULT_COLUMNS and row["status"] == "done"
        measured = ["top1", "many", "medium", "few", "top1_best", "n_many", "n_medium", "n_few", "n_train", "wall_s",
                    "images_per_s", "peak_mem_mb", "device", "params", "started_at", "finished_at"]
        assert [c for c in measured if row[c] == ""] == []
        assert math.isfinite(float(row["top1"]))
        params = json.loads(row["params"])
        assert params["alpha_schedule"] == "parabolic" and params["classifier_sampler"] == "class_balanced"


def test_memory_benchmark_shows_sc_quadratic_and_psc_linear(tmp_path, capsys):
    import csv

    from ltbench.cli import main

    out, figure = tmp_path / "bench" / "feature_loss_memory.csv", tmp_path / "memory.png"
    assert main(["bench", "--memory", "--batch-sizes", "256,512", "--classes", "10", "--device", "cpu",
                 "--out", str(out), "--plot", str(figure)]) == 0
    with open(out) as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["loss", "batch_size", "peak_mem_mb", "step_ms", "device"]
        peak = {(r["loss"], int(r["batch_size"])): float(r["peak_mem_mb"]) for r in reader}
    assert len(peak) == 4
    assert 3.5 < peak["sc", 512] / peak["sc", 256] < 4.5 and 1.5 < peak["psc", 512] / peak["psc", 256] < 2.5
    assert figure.read_bytes().startswith(b"\x89PNG")
    assert "written to" in capsys.readouterr().out
    assert main(["bench", "--memory", "--batch-sizes", "128", "--classes", "10", "--device", "cpu",
                 "--out", str(out), "--plot", "", "--json"]) == 0
    assert [(r["loss"], r["batch_size"]) for r in json.loads(capsys.readouterr().out)] == [("sc", 128), ("psc", 128)]


@pytest.mark.parametrize("argv, message", [
    (["--batch-sizes", "128,big"], "--batch-sizes must be a comma list of integers"),
    (["--batch-sizes", "0"], "positive sizes"),
    (["--classes", "1"], "--classes be at least 2"),
])
def test_memory_benchmark_rejects_bad_sizes(tmp_path, capsys, argv, message):
    from ltbench.cli import main

    assert main(["bench", "--memory", "--out", str(tmp_path / "m.csv"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m.csv").exists()
