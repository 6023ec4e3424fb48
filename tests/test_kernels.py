"""The fused batch norm + ReLU kernel computes what PyTorch's separate operators compute.

Each check runs the kernel in float32 against PyTorch's operators in float64 on the same
values: output, every gradient and the running statistics must agree to float32 rounding.
The shapes cover the CIFAR ResNets' (16/32/64 channels) and channel counts that are not a
multiple of the kernel's vector width or that span several of its channel blocks."""

import copy
import os
import shutil

import pytest
import timm
import torch
import torch.nn.functional as F

import ltbench.models  # noqa: F401  (registers the CIFAR ResNets with timm)
from ltbench.kernels import bn_relu, native

SHAPES = [(16, 8, 8), (32, 6, 6), (64, 4, 4), (24, 5, 5), (100, 3, 3), (7, 2, 3)]


@pytest.fixture(scope="module", autouse=True)
def kernel_compiled():
    if shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.skip("no C compiler: the kernel cannot be built here")
    ok, reason = bn_relu.available()
    assert ok, reason  # with a compiler present, the kernel must build


def batch_norm(channels: int, momentum=0.1) -> torch.nn.BatchNorm2d:
    bn = torch.nn.BatchNorm2d(channels, momentum=momentum)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    return bn


def channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.float().contiguous(memory_format=torch.channels_last).requires_grad_()


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want).abs().max() / want.abs().max()).item()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_matches_pytorch_operators_in_float64(shape, with_residual, momentum):
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(12, *shape, generator=gen, dtype=torch.float64) * 3 + 2  # a mean far from 0
    residual = torch.randn(x.shape, generator=gen, dtype=torch.float64) if with_residual else None
    upstream = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    fused_bn = batch_norm(shape[0], momentum)
    plain_bn = copy.deepcopy(fused_bn).double()

    xf, rf = channels_last(x), None if residual is None else channels_last(residual)
    assert bn_relu.fusable(xf, fused_bn, rf)
    yf = bn_relu.batch_norm_relu(xf, fused_bn, rf, fused=True)
    (yf * upstream.float()).sum().backward()

    xd = x.clone().requires_grad_()
    rd = None if residual is None else residual.clone().requires_grad_()
    yd = F.relu(plain_bn(xd) + (0 if rd is None else rd))
    (yd * upstream).sum().backward()

    assert ((yf > 0) == (yd > 0)).all()
    pairs = [(yf, yd), (xf.grad, xd.grad), (fused_bn.weight.grad, plain_bn.weight.grad),
             (fused_bn.bias.grad, plain_bn.bias.grad), (fused_bn.running_mean, plain_bn.running_mean),
             (fused_bn.running_var, plain_bn.running_var)]
    if residual is not None:
        pairs.append((rf.grad, rd.grad))
    for got, want in pairs:
        assert relative_error(got, want) < 2e-6
    assert fused_bn.num_batches_tracked.item() == plain_bn.num_batches_tracked.item() == 1


def test_same_result_on_every_run():
    x = channels_last(torch.randn(32, 16, 8, 8))
    upstream = torch.randn(x.shape)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        bn = batch_norm(16)
        xi = x.detach().clone().requires_grad_()
        y = bn_relu.batch_norm_relu(xi, bn, fused=True)
        y.backward(upstream)
        runs.append((y, xi.grad, bn.weight.grad, bn.running_var))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("case", ["eval", "nchw", "float64", "residual_nchw", "no_affine", "float64_parameters"])
def test_falls_back_to_pytorch_where_the_kernel_does_not_apply(case):
    bn = batch_norm(16) if case != "no_affine" else torch.nn.BatchNorm2d(16, affine=False)
    x = torch.randn(4, 16, 5, 5).contiguous(memory_format=torch.channels_last)
    residual = None
    if case == "eval":
        bn.eval()
    elif case == "nchw":
        x = x.contiguous()
    elif case == "float64":
        bn, x = bn.double(), x.double()
    elif case == "residual_nchw":
        residual = torch.randn(4, 16, 5, 5)
    elif case == "float64_parameters":
        bn = bn.double()
    assert not bn_relu.fusable(x, bn, residual)
    if case == "float64_parameters":  # PyTorch refuses the mix; the kernel must not read it as float32
        with pytest.raises(RuntimeError):
            bn_relu.batch_norm_relu(x, bn, fused=True)
        return
    plain = copy.deepcopy(bn)
    want = F.relu(plain(x) + (0 if residual is None else residual))
    assert torch.equal(bn_relu.batch_norm_relu(x, bn, residual, fused=True), want)


def test_model_trains_the_same_fused_and_unfused():
    torch.manual_seed(0)
    fused = timm.create_model("resnet8_cifar", num_classes=10, in_chans=1).to(memory_format=torch.channels_last)
    plain = copy.deepcopy(fused)
    fused.use_fused_bn_relu()
    assert fused.fused_bn_relu and all(block.fused_bn_relu for block in fused.layers)
    assert not plain.fused_bn_relu and not any(block.fused_bn_relu for block in plain.layers)
    images = torch.randn(16, 1, 32, 32).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (16,))
    for model in (fused, plain):
        F.cross_entropy(model(images), labels).backward()
    for (name, a), b in zip(fused.named_parameters(), plain.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6), name
    for (name, a), b in zip(fused.state_dict().items(), plain.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6), name
    fused.eval(), plain.eval()
    with torch.no_grad():
        assert torch.allclose(fused(images), plain(images), rtol=1e-4, atol=1e-5)


def test_compiles_once_into_the_cache_and_leaves_no_partial_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LTBENCH_CACHE", str(tmp_path))
    first = native.build("bn_relu")
    assert first.library is not None, first.reason
    built = list((tmp_path / "kernels").iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"
    stamp = built[0].stat().st_mtime_ns
    assert native.build("bn_relu").library is not None
    assert built[0].stat().st_mtime_ns == stamp  # loaded from the cache, not compiled again


def test_a_failing_compiler_is_reported_not_raised(tmp_path, monkeypatch):
    monkeypatch.setenv("LTBENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", shutil.which("false"))
    loaded = native.build("bn_relu")
    assert loaded.library is None and "could not compile bn_relu.c" in loaded.reason
    assert list((tmp_path / "kernels").iterdir()) == []
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    loaded = native.build("bn_relu")
    assert loaded.library is None and "no C compiler" in loaded.reason
    monkeypatch.delenv("CC")
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("LTBENCH_CACHE", str(tmp_path / "a-file"))
    loaded = native.build("bn_relu")
    assert loaded.library is None and "set LTBENCH_CACHE to a writable folder" in loaded.reason


def test_trainer_uses_the_kernel_and_falls_back_with_a_warning(monkeypatch, fashion_mnist):
    from ltbench.data.datasets import DATASETS
    from ltbench.launch.local import make_trainer
    from ltbench.sweep import resolve

    spec = resolve("ce", "fashion_mnist_lt", 100, 0, "smoke", {})
    data = DATASETS["fashion_mnist_lt"].build(None, 100, "exp", spec.n_max)
    assert make_trainer(spec, data, torch.device("cpu")).backbone.fused_bn_relu
    off = {**spec.params, "fused_bn_relu": False}
    assert not make_trainer(spec, data, torch.device("cpu"), off).backbone.fused_bn_relu
    nchw = {**spec.params, "channels_last": False}
    assert not make_trainer(spec, data, torch.device("cpu"), nchw).backbone.fused_bn_relu
    monkeypatch.setattr(bn_relu, "available", lambda: (False, "no C compiler (cc: not found)"))
    with pytest.warns(UserWarning, match="using PyTorch's operators: no C compiler"):
        trainer = make_trainer(spec, data, torch.device("cpu"))
    assert not trainer.backbone.fused_bn_relu
