"""The Slurm launcher's parts that need no cluster: options, config files, the submission
record, and reading squeue (through a stand-in squeue script)."""

import os
import stat

import pytest

from ltbench.cli import build_parser
from ltbench.errors import UserError
from ltbench.launch.slurm_options import MATCH_THREADS_TO_CPUS, SlurmOptions, options_from_args
from ltbench.launch.slurm_queue import (
    SlurmUnavailable, Submission, SubmissionRecord, check_cluster, outcome, queued_states, run_state,
)
from ltbench.spec import RunSpec
from ltbench.store import RunStore

RUN = ["run", "--methods", "ce", "--dataset", "fashion_mnist_lt", "--if", "10", "--launcher", "slurm"]


def options(*flags) -> SlurmOptions:
    return options_from_args(build_parser().parse_args([*RUN, *flags]))


def write_config(tmp_path, text):
    path = tmp_path / "slurm.toml"
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def no_site_config(monkeypatch):
    monkeypatch.delenv("LTBENCH_SLURM_CONFIG", raising=False)


def test_flags_win_over_the_config_file_and_lists_add_up(tmp_path):
    config = write_config(tmp_path, """
[slurm]
partition = "gpu"
account = "lab"
time = 240
gpus = 1
setup = ["module load cuda"]
extra = { constraint = "a100" }
""")
    got = options("--slurm-config", str(config), "--slurm-partition", "debug", "--slurm-cpus", "4",
                  "--slurm-extra", "mail-type=FAIL", "--slurm-setup", "source .venv/bin/activate", "--wait")
    assert got == SlurmOptions(partition="debug", account="lab", time=240, gpus=1, cpus=4,
                               extra={"constraint": "a100", "mail-type": "FAIL"},
                               setup=["module load cuda", "source .venv/bin/activate"], wait=True)


def test_config_file_can_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LTBENCH_SLURM_CONFIG", str(write_config(tmp_path, '[slurm]\nqos = "high"\n')))
    assert options().qos == "high"


def test_executor_parameters_speak_submitits_vocabulary():
    params = SlurmOptions(partition="gpu", time=30, gpus=2, cpus=8, mem="32G", setup=["echo hi"],
                          extra={"constraint": "a100"}).executor_parameters()
    assert params["slurm_partition"] == "gpu" and params["timeout_min"] == 30
    assert params["gpus_per_node"] == 2 and params["cpus_per_task"] == 8 and params["slurm_mem"] == "32G"
    assert params["slurm_additional_parameters"] == {"constraint": "a100"}
    # the user's setup runs after the thread default, so it can override it
    assert params["slurm_setup"] == [MATCH_THREADS_TO_CPUS, "echo hi"]


@pytest.mark.parametrize("text, message", [
    ("[slurm\n", "not valid TOML"),
    ('partition = "gpu"\n', "no [slurm] table"),
    ('[slurm]\npartion = "gpu"\n', "Did you mean 'partition'"),
    ('[slurm]\ntime = "2h"\n', "time = '2h' should be a whole number"),
    ("[slurm]\ngpus = true\n", "gpus = True should be a whole number"),
    ("[slurm]\nsetup = \"echo\"\n", "setup = 'echo' should be a list of strings"),
    ('[slurm]\nmem = "lots"\n', "not a Slurm memory size"),
    ("[slurm]\ntime = 0\n", "time must be at least 1"),
])
def test_bad_config_file_says_what_is_wrong(tmp_path, text, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(")):
        options("--slurm-config", str(write_config(tmp_path, text)))


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        options("--slurm-config", str(tmp_path / "nope.toml"))


@pytest.mark.parametrize("flags, message", [
    (["--slurm-extra", "constraint"], "is not KEY=VALUE"),
    (["--slurm-array-parallelism", "0"], "array-parallelism must be at least 1"),
    (["--slurm-mem", "16 GB"], "not a Slurm memory size"),
])
def test_bad_flags_say_what_is_wrong(flags, message):
    with pytest.raises(UserError, match=message):
        options(*flags)


def test_no_slurm_commands_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SlurmUnavailable, match="sbatch, squeue, srun, sinfo not found on PATH") as error:
        check_cluster("debug")
    assert "scripts/slurm_cluster.sh start" in str(error.value)


def fake_squeue(tmp_path, monkeypatch, stdout="", stderr="", exit_code=0):
    script = tmp_path / "squeue"
    script.write_text(f"#!/bin/sh\nprintf '%s' '{stdout}'\nprintf '%s' '{stderr}' >&2\nexit {exit_code}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")


def test_squeue_lines_become_run_states(tmp_path, monkeypatch):
    lines = "7_0|RUNNING|0|\n7_1|PENDING|0|\n7_2|PENDING|1|\n7_3|COMPLETED|0|\n8|REQUEUE_HOLD|1|\n"
    fake_squeue(tmp_path, monkeypatch, stdout=lines)
    assert queued_states(["7_0", "7_1", "7_2", "7_3", "8"]) == {
        "7_0": "running", "7_1": "pending", "7_2": "requeued", "8": "requeued"}


def test_squeue_forgetting_every_job_means_none_is_queued(tmp_path, monkeypatch):
    fake_squeue(tmp_path, monkeypatch, stderr="slurm_load_jobs error: Invalid job id specified", exit_code=1)
    assert queued_states(["7_0"]) == {}


def test_unreachable_controller_is_an_error(tmp_path, monkeypatch):
    fake_squeue(tmp_path, monkeypatch, stderr="Unable to contact slurm controller", exit_code=1)
    with pytest.raises(SlurmUnavailable, match="Unable to contact slurm controller"):
        queued_states(["7_0"])


def test_run_state_names():
    assert run_state("CONFIGURING", 0) == "running"
    assert run_state("SUSPENDED", 0) == "suspended"
    assert run_state("PREEMPTED", 0) == "requeued"


def test_submission_record_keeps_the_latest_job_per_run(tmp_path):
    record = SubmissionRecord(tmp_path)
    first = Submission("7_0", "a.out", "a.err", "2026-01-01T00:00:00+00:00")
    record.add({"r1": first, "r2": first})
    record.add({"r2": Submission("9", "b.out", "b.err", "2026-01-02T00:00:00+00:00")})
    assert record.read()["r1"] == first and record.read()["r2"].job_id == "9"


def test_a_result_counts_only_when_it_comes_from_the_submission_or_later(tmp_path):
    store = RunStore(tmp_path)
    spec = RunSpec("ce", "fashion_mnist_lt", 10.0, "exp", "resnet8_cifar", 0, 2, 64, 30, "smoke", {})
    submission = Submission("7_0", "a.out", "a.err", "2026-01-02T00:00:00+00:00")
    assert outcome(store, spec.run_id, submission) is None
    stale = {"run_id": spec.run_id, "status": "failed", "slurm_job_id": "3_0",
             "finished_at": "2026-01-01T00:00:00+00:00"}
    store.write_result(stale)
    assert outcome(store, spec.run_id, submission) is None
    store.write_result({**stale, "slurm_job_id": "7_0", "status": "done", "top1": 50.0})
    assert outcome(store, spec.run_id, submission) == "done"
    store.write_result({**stale, "slurm_job_id": "", "finished_at": "2026-01-03T00:00:00+00:00"})
    assert outcome(store, spec.run_id, submission) == "failed"
