"""The methods' state and batch-level losses over two data-parallel ranks (gloo, spawned by
torch.multiprocessing), against one process given the same global batch: TDE's moving average,
BCL's, KCL's and TSC's losses and TSC's centroids, PaCo's queue, key encoder and batch shuffle;
and for every registered method, that the ranks hold one state after a few steps."""

import itertools
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from image_data import data_root, one_thread  # noqa: F401,F811  (module fixtures)
from ltbench import distributed, registry
from ltbench.method import Batch, Progress
from test_distributed import free_port

N, DIM = 10, 8  # a global batch of 10 images; rank 0 holds 6 of them, rank 1 holds 4
LABELS = torch.tensor([0, 1, 0, 2, 1, 0, 2, 3, 1, 0])
STEPS = 2


def shares() -> list[range]:
    return [range(0, 6), range(6, 10)]


def even_shares() -> list[range]:
    """Shares of one size, where DDP's mean of the ranks' mean losses is the batch's mean."""
    return [range(0, 5), range(5, 10)]


def global_images(seed: int = 0) -> torch.Tensor:
    return torch.randn(N, 3, 4, 4, generator=torch.Generator().manual_seed(seed))


def make_method(name: str, **hp):
    cls = registry.method(name)
    torch.manual_seed(0)  # the heads' initialisation
    return cls({**cls.defaults(), **hp}, [30, 20, 10, 5], DIM)


def linear_backbone() -> nn.Module:
    """No BatchNorm: the features of an image do not depend on the rest of its batch, so a rank's
    share gives the features one device gives those images."""
    torch.manual_seed(1)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(48, DIM))
    backbone.num_features = DIM
    return backbone


def part(x: torch.Tensor, rows: range | None) -> torch.Tensor:
    return x if rows is None else x[rows.start : rows.stop]


def train(backbone: nn.Module, method: nn.Module, batches_of, rows: range | None) -> list[float]:
    """STEPS SGD steps on the global batch (rows None) or on this rank's rows of it, under DDP
    as the trainer takes them; the losses."""
    step = distributed.data_parallel(backbone, method)
    optimizer = torch.optim.SGD([*backbone.parameters(), *method.parameters()], lr=0.1)
    losses = []
    for s in range(STEPS):
        progress = Progress(0, 1, s, STEPS, lr=0.1)
        batches = batches_of(s, rows)
        loss = method.loss(backbone, batches, progress) if step is None else step(batches, progress)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_step(progress)
        losses.append(loss.item())
    return losses


def features() -> torch.Tensor:
    return torch.randn(N, DIM, generator=torch.Generator().manual_seed(5))


def tde_batches(s, rows):
    return {"main": Batch([part(global_images(s), rows)], part(LABELS, rows))}


def paco_batches(s, rows):
    query, key = global_images(s), global_images(s + 10)
    return {"main": Batch([part(query, rows), part(key, rows)], part(LABELS, rows))}


def embeddings_of(seed: int) -> torch.Tensor:
    """Two views of the global batch, L2-normalised: rows 0..N-1 the first view, N..2N-1 the second."""
    return F.normalize(torch.randn(2 * N, DIM, generator=torch.Generator().manual_seed(seed)), dim=1)


def view_rows(rows: range | None) -> list[int]:
    """The rows of two views' embeddings that hold `rows` of the batch, view after view."""
    rows = range(N) if rows is None else rows
    return [*rows, *(N + r for r in rows)]


FEATURE_LOSSES = {
    # name: (method, hyperparameters, loss of (method, embeddings, labels of both views))
    "bcl": ("bcl", {"projection_dim": DIM}, lambda m, z, y: m.feature_loss(z, y)),
    # k above any class's candidates: every one of them is a positive, so the draw is no draw
    "kcl": ("kcl_stage1", {"projection_dim": DIM, "k": 100}, lambda m, z, y: m.feature_loss(z, y)),
    "tsc": ("tsc_stage1", {"projection_dim": DIM, "k": 100, "target_iterations": 50},
            lambda m, z, y: sum(m.contrastive_terms(z, y, Progress(1, 2, 0, 1)).values())),
}


def feature_loss(case: str, rows: range | None) -> dict:
    """A method's feature loss of this rank's rows of fixed embeddings (all of them in one
    process): the loss, the embeddings' gradient and the method's parameters' gradients."""
    name, hp, loss_of = FEATURE_LOSSES[case]
    method = make_method(name, **hp)
    local = embeddings_of(3)[view_rows(rows)].clone().requires_grad_(True)
    labels = part(LABELS, rows).repeat(2)
    loss = loss_of(method, local, labels)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}
    return {"loss": loss.detach(), "grad": local.grad, "param_grads": grads, "buffers": dict(method.named_buffers())}


def shuffled_shares(rows: range) -> dict:
    seen = []

    def record(x):
        seen.append(x.clone())
        return x * 2

    x = torch.arange(N, dtype=torch.float)[rows.start : rows.stop, None]
    return {"result": distributed.on_shuffled_shares(record, x), "seen": seen[0]}


# ----------------------------------------------------------------------------- every method


def _method_state(trainer) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{key}": value for prefix, module in (("backbone", trainer.backbone), ("method", trainer.method))
            for key, value in module.state_dict().items()}


def _batch_norm_statistics(trainer) -> set[str]:
    """Running statistics of BatchNorm layers: each rank's from its share, as DDP leaves them,
    until the epoch's end makes them rank 0's (Trainer._train_epoch)."""
    names = set()
    for prefix, root in (("backbone", trainer.backbone), ("method", trainer.method)):
        for name, module in root.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                names |= {f"{prefix}.{name}.{key}".replace("..", ".") for key, _ in module.named_buffers(recurse=False)}
    return names


def _differing(state: dict[str, torch.Tensor], skip: set[str]) -> list[str]:
    """Keys of `state` whose tensors are not rank 0's."""
    differing = []
    for key, value in state.items():
        if key in skip:
            continue
        theirs = value.detach().clone()
        torch.distributed.broadcast(theirs, src=0)
        if not torch.equal(theirs, value):
            differing.append(key)
    return differing


def every_method(root: Path) -> dict[str, dict]:
    """Per registered method: the state keys where the ranks differ after STEPS training steps
    (BatchNorm's running statistics aside), and after the epoch's end synchronises the buffers
    (everything); or why it cannot train data-parallel."""
    from ltbench.errors import UserError
    from ltbench.runner import make_trainer
    from ltbench.stages import Stage1, stage1_spec
    from ltbench.sweep import Sweep, expand
    from ltbench.teacher import untrained_teacher

    found = {}
    for name in registry.methods():
        try:
            overrides = {"image_size": 16, "batch_size": 16, "epochs": 2}
            if name.startswith("tsc"):  # spread its targets in a few iterations, not 10,000
                overrides["tsc_stage1.target_iterations"] = 50
            spec = expand(Sweep([name], ["imagenet_lt"], [], preset="smoke", overrides=overrides))[0]
            data = registry.dataset(spec.dataset).build(root, spec.imbalance_factor, spec.profile, spec.n_max)
            stage1, first = None, stage1_spec(spec)
            if first is not None:  # an untrained stage 1: stage 2's own state is what is checked
                untrained = make_trainer(first, data, torch.device("cpu"))
                stage1 = Stage1(first, reused=True, result={}, state=untrained.state_dict(0, 0.0, 0))
            trainer = make_trainer(spec, data, torch.device("cpu"), stage1=stage1,
                                   distils_from=untrained_teacher(spec, data))
        except UserError as error:
            found[name] = {"refused": str(error)}
            continue
        if trainer.epochs == 0:
            found[name] = {"post_hoc": True}
            continue
        trainer.backbone.train()
        trainer.method.train()
        # a draw of a few large batches may end its epoch before the steps do
        batches = itertools.chain.from_iterable(trainer.loader.epoch() for _ in range(STEPS))
        for s in range(STEPS):
            trainer.train_step(next(batches), Progress(0, trainer.epochs, s, trainer.loader.steps_per_epoch, lr=0.1))
        state = _method_state(trainer)
        after_steps = _differing(state, _batch_norm_statistics(trainer))
        distributed.sync_buffers(trainer.backbone, trainer.method)
        found[name] = {"after_steps": after_steps, "after_epoch": _differing(_method_state(trainer), set())}
    return found


# ----------------------------------------------------------------------------- the ranks


def _rank(rank: int, port: int, out: str, root: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2", LTBENCH_WORKERS="0")
    torch.set_num_threads(1)
    rows = shares()[rank]
    with distributed.process_group("cpu"):
        results = {"shuffle": shuffled_shares(rows), "batch_mean": distributed.batch_mean(part(features(), rows))}
        results.update({case: feature_loss(case, rows) for case in FEATURE_LOSSES})
        tde = make_method("tde")
        results["tde"] = {"losses": train(linear_backbone(), tde, tde_batches, even_shares()[rank]),
                          "head_direction": tde.head_direction.value.clone()}
        torch.manual_seed(0)
        paco = make_method("paco", queue_size=32, projection_dim=DIM)
        backbone = linear_backbone()
        train(backbone, paco, paco_batches, rows)
        results["paco"] = {"queue": {k: v.clone() for k, v in paco.queue.state_dict().items()},
                           "key_encoder": {k: v.clone() for k, v in paco.key_encoder.state_dict().items()},
                           "backbone": {k: v.clone() for k, v in backbone.state_dict().items()}}
        results["every_method"] = every_method(Path(root))
        torch.save(results, Path(out) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ranks(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("method_ranks")
    mp.spawn(_rank, args=(free_port(), str(out), str(data_root)), nprocs=2)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


# ----------------------------------------------------------------------------- the tests


@pytest.mark.slow
def test_batch_mean_over_unequal_shares_is_the_global_batch_mean(ranks):
    assert torch.equal(ranks[0]["batch_mean"], ranks[1]["batch_mean"])
    assert torch.allclose(ranks[0]["batch_mean"], features().mean(0), atol=1e-6)


@pytest.mark.slow
def test_tde_moving_average_over_ranks_is_the_global_batch_average(ranks):
    torch.manual_seed(0)
    tde = make_method("tde")
    losses = train(linear_backbone(), tde, tde_batches, None)
    one = tde.head_direction.value
    assert one.abs().sum() > 0
    # the same buffer on both ranks, to the bit, and the one that one process keeps of the whole batch
    assert torch.equal(ranks[0]["tde"]["head_direction"], ranks[1]["tde"]["head_direction"])
    assert torch.allclose(ranks[0]["tde"]["head_direction"], one, atol=1e-6)
    # rank 0's share alone, as DDP's broadcast of rank 0's buffers would leave it, is another average
    alone = make_method("tde")
    train(linear_backbone(), alone, tde_batches, even_shares()[0])
    assert not torch.allclose(alone.head_direction.value, one, atol=1e-3)
    for step, loss in enumerate(losses):
        assert loss == pytest.approx((ranks[0]["tde"]["losses"][step] + ranks[1]["tde"]["losses"][step]) / 2, rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(FEATURE_LOSSES))
def test_feature_loss_over_ranks_is_the_one_device_loss_and_gradient(ranks, case):
    one = feature_loss(case, None)
    # DDP averages the ranks' gradients: their mean is what one device computes
    assert torch.allclose((ranks[0][case]["loss"] + ranks[1][case]["loss"]) / 2, one["loss"], atol=1e-5)
    grad = torch.zeros_like(one["grad"])
    for r, rows in enumerate(shares()):
        grad[view_rows(rows)] = ranks[r][case]["grad"] / 2
    assert torch.allclose(grad, one["grad"], atol=1e-5)
    for name, want in one["param_grads"].items():
        got = (ranks[0][case]["param_grads"][name] + ranks[1][case]["param_grads"][name]) / 2
        assert torch.allclose(got, want, atol=1e-5), name


@pytest.mark.slow
def test_tsc_centroids_over_ranks_are_the_global_batch_centroids(ranks):
    one = feature_loss("tsc", None)["buffers"]["centroids"]
    name, hp, _ = FEATURE_LOSSES["tsc"]
    assert not torch.allclose(one, make_method(name, **hp).centroids)  # the batch moved them
    assert torch.equal(ranks[0]["tsc"]["buffers"]["centroids"], ranks[1]["tsc"]["buffers"]["centroids"])
    assert torch.allclose(ranks[0]["tsc"]["buffers"]["centroids"], one, atol=1e-6)


@pytest.mark.slow
def test_paco_queue_and_key_encoder_are_one_across_ranks(ranks):
    queues = [r["paco"]["queue"] for r in ranks]
    for key in queues[0]:
        assert torch.equal(queues[0][key], queues[1][key]), key
    # every step wrote the global batch's keys, rank 0's then rank 1's, in the batch's order
    assert int(queues[0]["pointer"]) == STEPS * N
    assert torch.equal(queues[0]["labels"][:STEPS * N], LABELS.repeat(STEPS))
    # the key encoder follows the query encoder, which DDP keeps equal: it stays equal too
    encoders = [r["paco"]["key_encoder"] for r in ranks]
    parameters = [k for k in encoders[0] if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert parameters and all(torch.equal(encoders[0][k], encoders[1][k]) for k in parameters)
    for key, value in ranks[0]["paco"]["backbone"].items():
        assert torch.equal(value, ranks[1]["paco"]["backbone"][key]), key


@pytest.mark.slow
def test_keys_are_encoded_on_shuffled_shares_and_come_back_to_their_rank(ranks):
    seen = torch.cat([r["shuffle"]["seen"] for r in ranks]).flatten()
    # together the ranks encoded the global batch once, each as many rows as it holds, and
    # not each its own rows
    assert sorted(seen.tolist()) == list(range(N))
    assert [len(r["shuffle"]["seen"]) for r in ranks] == [len(s) for s in shares()]
    assert ranks[0]["shuffle"]["seen"].flatten().tolist() != list(shares()[0])
    for r, rows in zip(ranks, shares()):
        assert r["shuffle"]["result"].flatten().tolist() == [2.0 * i for i in rows]


@pytest.mark.slow
def test_every_method_keeps_one_state_across_ranks(ranks):
    found = [r["every_method"] for r in ranks]
    assert found[0].keys() == set(registry.methods())
    checked = []
    for name, outcome in found[0].items():
        if "refused" in outcome:
            # a method the image-file loader cannot feed refuses with a clear error, on every rank
            assert "image-file" in outcome["refused"] and found[1][name] == outcome, (name, outcome)
            continue
        if "post_hoc" in outcome:
            continue
        checked.append(name)
        for r in range(2):
            assert found[r][name] == {"after_steps": [], "after_epoch": []}, (name, r, found[r][name])
    # paco included: the image-file loader draws its query and key views
    assert {"tde", "bcl", "paco", "kcl_stage1", "tsc_stage1", "sc_hybrid", "ride_distill", "ce"} <= set(checked)
