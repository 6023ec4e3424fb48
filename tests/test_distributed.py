"""Data-parallel runs on CPU (gloo): two ranks by torch.multiprocessing, by torchrun through the
CLI, and as a two-task Slurm job. What two ranks evaluate must equal what one process
evaluates from the checkpoint they leave, and an interrupted distributed run must resume to
the result of an uninterrupted one."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import image_data
from image_data import data_root, one_thread  # noqa: F401  (module fixtures)
from ltbench import distributed, registry
from ltbench.cli import main
from ltbench.runner import execute, make_trainer
from ltbench.store import RunStore
from ltbench.sweep import Sweep, expand
from ltbench.train import Reporter

TINY = {"image_size": 16, "batch_size": 32}
FLAGS = ["--preset", "smoke", "--device", "cpu", "--set", "image_size=16", "--batch-size", "32"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_spec(method: str, dataset: str, epochs: int = 2):
    overrides = {**TINY, "epochs": epochs}
    return expand(Sweep([method], [dataset], [], preset="smoke", overrides=overrides))[0]


def single_process_evaluation(results: Path, run_id: str, data_root: Path):
    """The per-class counts one process gets from the run's last checkpoint."""
    store = RunStore(results)
    spec = store.read_spec(run_id)
    data = registry.dataset(spec.dataset).build(data_root, spec.imbalance_factor, spec.profile, spec.n_max)
    trainer = make_trainer(spec, data, torch.device("cpu"))
    trainer.load_state_dict(store.load_checkpoint(run_id))
    counts = trainer.evaluate()
    return [{"class": str(c), "correct": str(int(counts.correct[c])), "total": str(int(counts.total[c]))}
            for c in range(data.num_classes)]


def evaluated(results: Path, run_id: str):
    return [{k: row[k] for k in ("class", "correct", "total")} for row in RunStore(results).read_per_class(run_id)]


# ----------------------------------------------------------------------------- two spawned ranks


class StopAfterFirstEpoch(Reporter):
    """Ctrl-C right after the first epoch's checkpoint, on every rank."""

    def epoch_end(self, record):
        raise KeyboardInterrupt


def _rank(rank: int, port: int, out: str, data_root: str, spec_json: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2", LTBENCH_WORKERS="0")
    torch.set_num_threads(1)
    from ltbench.run_context import RunContext
    from ltbench.spec import RunSpec
    from ltbench_methods.sc_hybrid import supervised_contrastive_loss_across_ranks

    out = Path(out)
    with distributed.process_group("cpu"):
        # the SC loss over ranks of unequal size: rank 0 holds 6 embeddings, rank 1 holds 4
        torch.manual_seed(0)
        embeddings = torch.nn.functional.normalize(torch.randn(10, 8), dim=1)
        labels = torch.tensor([0, 1, 0, 2, 1, 0, 2, 2, 1, 3])
        part = slice(0, 6) if rank == 0 else slice(6, 10)
        local = embeddings[part].clone().requires_grad_(True)
        loss = supervised_contrastive_loss_across_ranks(local, labels[part], 0.1)
        loss.backward()
        torch.save({"loss": loss.detach(), "grad": local.grad}, out / f"supcon{rank}.pt")

        spec, context = RunSpec.from_dict(json.loads(spec_json)), RunContext(Path(data_root))
        execute(spec, out / "uninterrupted", "cpu", context=context)
        with pytest.raises(KeyboardInterrupt):
            execute(spec, out / "interrupted", "cpu", reporter=StopAfterFirstEpoch(), context=context)
        with open(out / f"log{rank}.txt", "w") as log:
            execute(spec, out / "interrupted", "cpu", context=context, log=lambda line: print(line, file=log))


@pytest.fixture(scope="module")
def two_ranks(data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ranks")
    spec = tiny_spec("sc_hybrid", "imagenet_lt")
    mp.spawn(_rank, args=(free_port(), str(out), str(data_root), json.dumps(spec.to_dict())), nprocs=2)
    return out, spec


@pytest.mark.slow
def test_supcon_over_ranks_is_the_one_device_loss_and_gradient(two_ranks):
    from ltbench_methods.sc_hybrid import supervised_contrastive_loss

    out, _ = two_ranks
    torch.manual_seed(0)
    embeddings = torch.nn.functional.normalize(torch.randn(10, 8), dim=1).requires_grad_(True)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 2, 2, 1, 3])
    loss = supervised_contrastive_loss(embeddings, labels, 0.1)
    loss.backward()
    ranks = [torch.load(out / f"supcon{r}.pt") for r in range(2)]
    # DDP averages the ranks' gradients, so their mean is what one device computes
    assert torch.allclose((ranks[0]["loss"] + ranks[1]["loss"]) / 2, loss.detach(), atol=1e-5)
    assert torch.allclose(torch.cat([ranks[0]["grad"], ranks[1]["grad"]]) / 2, embeddings.grad, atol=1e-5)


@pytest.mark.slow
def test_two_ranks_evaluate_what_one_process_evaluates_from_their_checkpoint(two_ranks, data_root):
    out, spec = two_ranks
    results = out / "uninterrupted"
    row = RunStore(results).read_result(spec.run_id)
    assert row["status"] == "done", row["error"]
    counts = evaluated(results, spec.run_id)
    assert sum(int(r["total"]) for r in counts) == len(image_data.TRAIN_COUNTS) * image_data.EVAL_PER_CLASS
    assert counts == single_process_evaluation(results, spec.run_id, data_root)
    assert not list(results.glob("*/error*.log"))


@pytest.mark.slow
def test_interrupted_distributed_run_resumes_to_the_uninterrupted_result(two_ranks):
    out, spec = two_ranks
    assert "resuming from epoch 1 of 2" in (out / "log0.txt").read_text()
    assert "resuming from epoch 1 of 2" in (out / "log1.txt").read_text()
    got, want = RunStore(out / "interrupted"), RunStore(out / "uninterrupted")
    assert got.read_result(spec.run_id)["top1"] == want.read_result(spec.run_id)["top1"]
    # the ranks' validation counts add up as the test set's do, and resume alike
    validation = ("val_top1", "n_val", "top1_bestval", "top1_bestval_epoch")
    assert [got.read_result(spec.run_id)[c] for c in validation] == [want.read_result(spec.run_id)[c]
                                                                     for c in validation]
    assert int(want.read_result(spec.run_id)["n_val"]) == image_data.VAL_PER_CLASS * len(image_data.TRAIN_COUNTS)
    assert got.read_per_class(spec.run_id) == want.read_per_class(spec.run_id)


# ----------------------------------------------------------------------------- torchrun


@pytest.mark.slow
def test_torchrun_runs_the_sweep_data_parallel(data_root, tmp_path):
    results = tmp_path / "results"
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LTBENCH_WORKERS": "1"}
    done = subprocess.run(
        [str(torchrun), "--nproc-per-node", "2", "--master-port", str(free_port()), "-m", "ltbench.cli", "run",
         "--methods", "ce", "--dataset", "places_lt", *FLAGS, "--set", "save_predictions=true",
         "--data-root", str(data_root), "--results-dir", str(results)],
        capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("1 runs in the grid") == 1  # rank 1 keeps quiet
    (run_id,) = RunStore(results).run_ids()
    assert RunStore(results).read_result(run_id)["status"] == "done"
    assert evaluated(results, run_id) == single_process_evaluation(results, run_id, data_root)
    # each rank evaluated every second image: the predictions file has them back in test-set order
    spec = RunStore(results).read_spec(run_id)
    test_y = registry.dataset(spec.dataset).build(data_root, spec.imbalance_factor, spec.profile, spec.n_max).test_y
    with np.load(results / run_id / "predictions.npz") as saved:
        label, predicted = saved["label"], saved["predicted"]
    assert np.array_equal(label, test_y)
    correct = np.bincount(label[predicted == label], minlength=len(evaluated(results, run_id)))
    assert [int(r["correct"]) for r in evaluated(results, run_id)] == correct.tolist()


# ----------------------------------------------------------------------------- Slurm


@pytest.mark.slow
@pytest.mark.slurm
def test_two_task_slurm_job_is_one_data_parallel_run(slurm_cluster, data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("LTBENCH_WORKERS", "0")
    results = tmp_path / "results"
    code = main(["run", "--methods", "ce", "--dataset", "inat2018", *FLAGS, "--data-root", str(data_root),
                 "--results-dir", str(results), "--launcher", "slurm", "--slurm-tasks-per-node", "2",
                 "--slurm-time", "10", "--wait"])
    store = RunStore(results)
    (run_id,) = store.run_ids()
    logs = sorted((results / "slurm").glob("*/*_log.err"))
    assert code == 0, "\n".join(p.read_text()[-2000:] for p in logs)
    row = store.read_result(run_id)
    assert row["status"] == "done" and row["slurm_job_id"]
    # one log per task, each task one rank of the same run; rank 0 wrote the result
    outs = "".join(p.read_text() for p in (results / "slurm").glob("*/*_log.out"))
    assert "rank 0 of 2" in outs and "rank 1 of 2" in outs, outs[-2000:]
    assert evaluated(results, run_id) == single_process_evaluation(results, run_id, data_root)


def test_distributed_helpers_are_the_identity_in_one_process():
    x = torch.arange(6.0).view(3, 2)
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main()
    assert distributed.gather(x) is x and distributed.gather_with_grad(x) == (x, 0)
    assert distributed.broadcast({"a": 1}) == {"a": 1} and distributed.rank_file("error.log") == "error.log"
    assert list(distributed.share(8, 13)) == [8, 9, 10, 11, 12]
    assert distributed.steps_per_epoch(10, 4) == 3


def test_a_rank_gets_its_contiguous_share_and_a_too_small_last_batch_is_dropped(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    shares = []
    for r in range(3):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        shares.append(list(distributed.share(10, 18)))
    assert shares == [[10, 11, 12], [13, 14, 15], [16, 17]]
    assert distributed.steps_per_epoch(10, 4) == 2  # a last batch of 2 cannot feed 3 ranks
    assert distributed.steps_per_epoch(11, 4) == 3


def test_cifar_sized_runs_refuse_several_ranks(monkeypatch):
    from ltbench.data.pipeline import make_loader
    from ltbench.errors import UserError

    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    data = type("Data", (), {"name": "cifar10_lt"})()
    with pytest.raises(UserError, match="CIFAR-sized dataset: its runs take one device"):
        make_loader(data, {}, 8, "cpu", 0, {})


def test_slurm_runs_one_task_per_gpu_on_every_node():
    from ltbench.cli import build_parser
    from ltbench.launch.slurm_options import SlurmOptions, options_from_args

    params = SlurmOptions(gpus=8, nodes=2).executor_parameters()
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (2, 8, 8)
    assert params["slurm_srun_args"] == ["--kill-on-bad-exit=1"]  # one failed rank ends the others
    single = SlurmOptions(gpus=1).executor_parameters()
    assert (single["nodes"], single["tasks_per_node"], single["slurm_srun_args"]) == (1, 1, None)
    args = build_parser().parse_args(["run", "--slurm-nodes", "2", "--slurm-tasks-per-node", "3"])
    assert options_from_args(args).executor_parameters()["tasks_per_node"] == 3
