import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ltbench import registry
from ltbench.bench import DEFAULT_LOSSES
from ltbench.bench.profile import CATEGORIES, OTHER, OUTSIDE, category
from ltbench.cli import main


def test_bench_measures_both_paths_and_writes_csv(tmp_path, capsys, fashion_mnist):
    out = tmp_path / "throughput.csv"
    argv = ["bench", "--methods", "ce", "--backbone", "resnet8_cifar", "--batch-size", "32", "--steps", "2",
            "--rounds", "2", "--warmup-steps", "1", "--workers", "1", "--out", str(out), "--json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["method"], r["path"], r["variant"]) for r in rows] == [
        ("ce", "ltbench", "channels_last"), ("ce", "ltbench", "nchw"), ("ce", "ltbench", "bf16+channels_last"),
        ("ce", "reference", "fp32 nchw")]
    for row in rows:
        assert row["images_per_s"] > 0 and 0 <= row["data_share"] <= 1 and (row["steps"], row["rounds"]) == (2, 2)
        # a ResNet-8 step at batch 32 holds a few MB of activations and gradients
        assert 1 < row["step_peak_mb"] < 200
    assert rows[-1]["vs_reference"] == rows[-1]["vs_reference_min"] == rows[-1]["vs_reference_max"] == 1.0
    assert all(r["vs_reference_min"] <= r["vs_reference"] <= r["vs_reference_max"] for r in rows)
    with open(out) as fh:
        assert [r["path"] for r in csv.DictReader(fh)] == ["ltbench"] * 3 + ["reference"]


def test_bench_times_a_distilling_method_with_its_teachers_forward(tmp_path, capsys, fashion_mnist):
    """No teacher is trained for a benchmark: the teacher run's architecture, as initialised,
    stands in, so the step pays for the teacher's forward pass as a real run's does."""
    from ltbench.bench.inputs import bench_spec, timed_trainer
    from ltbench.teacher import teacher_of

    spec = bench_spec("ride_distill", "fashion_mnist_lt", overrides={"backbone": "resnet8_cifar", "batch_size": 16})
    data = registry.dataset("fashion_mnist_lt").build(fashion_mnist, spec.imbalance_factor, spec.profile, 200)
    trainer = timed_trainer(spec, data, torch.device("cpu"))
    frozen = teacher_of(trainer.method)
    assert len(frozen.backbone.experts) == 6 and not frozen.training
    assert not any(p.requires_grad for p in frozen.parameters())
    out = tmp_path / "throughput.csv"
    argv = ["bench", "--methods", "ride_distill", "--backbone", "resnet8_cifar", "--batch-size", "16", "--steps", "1",
            "--rounds", "1", "--warmup-steps", "1", "--out", str(out), "--json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["method"] for r in rows} == {"ride_distill"} and all(r["images_per_s"] > 0 for r in rows)


def test_bench_profiler_accounts_for_the_whole_step(tmp_path, capsys, fashion_mnist):
    out = tmp_path / "profile.csv"
    argv = ["bench", "--profiler", "--methods", "ce", "--backbone", "resnet8_cifar", "--batch-size", "32",
            "--steps", "2", "--warmup-steps", "1", "--out", str(out), "--json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    by_category = {r["category"]: r for r in rows}
    assert list(by_category) == [label for label, _ in CATEGORIES] + [OTHER, OUTSIDE]
    # a ResNet's step is mostly convolutions and batch norm
    for label in ("convolution forward", "convolution backward", "batch norm", "optimiser"):
        assert by_category[label]["ms_per_step"] > 0, label
    # together, not one by one: on a busy host a step's time falls unevenly between operators
    assert sum(by_category[label]["share"] for label in ("convolution forward", "convolution backward",
                                                          "batch norm")) > 0.5
    assert abs(sum(r["share"] for r in rows) - 1) < 0.05
    assert all(r["conv_forward_gflops"] > 0 and r["conv_ceiling_gflops"] > 0 for r in rows)
    with open(out) as fh:
        assert [r["category"] for r in csv.DictReader(fh)] == list(by_category)


def test_operators_are_sorted_into_kinds():
    assert category("aten::convolution_backward") == "convolution backward"
    assert category("aten::mkldnn_convolution") == category("aten::cudnn_convolution") == "convolution forward"
    assert category("aten::native_batch_norm_backward") == "batch norm"
    assert category("NativeBatchNormBackward0") == "batch norm"
    assert category("aten::threshold_backward") == category("aten::relu_") == "activation"
    assert category("aten::addmm") == category("aten::mm") == "matrix multiply"
    assert category("aten::_log_softmax_backward_data") == "loss"
    assert category("aten::_foreach_add_") == category("Optimizer.step#SGD.step") == "optimiser"
    assert category("aten::add_") == category("aten::empty") == OTHER


def test_bench_refuses_two_measurements_at_once(tmp_path, capsys):
    out = tmp_path / "x.csv"
    assert main(["bench", "--memory", "--profiler", "--out", str(out)]) == 2
    assert "--memory and --profiler" in capsys.readouterr().err
    for bad in (["--steps", "0"], ["--rounds", "0"]):
        assert main(["bench", *bad, "--out", str(out)]) == 2
        assert "--steps and --rounds must be at least 1" in capsys.readouterr().err
    assert not out.exists()


def test_bench_profile_is_not_taken_for_profiler(capsys):
    # --profile is `ltbench run`'s imbalance profile; the bench's operator profiler is --profiler
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--profile"])
    assert exc.value.code == 2 and "--profile" in capsys.readouterr().err


BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_memory_benchmark_script_is_the_bench_command(tmp_path):
    out = tmp_path / "memory.csv"
    result = subprocess.run([sys.executable, str(BENCHMARKS / "feature_loss_memory.py"), "--batch-sizes", "16,32",
                             "--plot", "", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    with open(out) as fh:
        assert [(r["loss"], r["batch_size"]) for r in csv.DictReader(fh)] == [
            (loss, size) for size in ("16", "32") for loss in DEFAULT_LOSSES]
