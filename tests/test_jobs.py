"""Several runs at once: `ltbench run --jobs N`, and the run lock that keeps every run trained
exactly once whatever starts it (two sweeps on one results dir, a killed holder)."""

import csv
import os
import pty
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from ltbench import run_lock
from ltbench.cli import main
from ltbench.launch.job_plan import JobPlan, plan_jobs, visible_gpu
from ltbench.store import RunStore

from finished_runs import finished_runs

# one-stage runs and a two-stage one whose stage 1 is the sweep's CE run
SWEEP = ["run", "--methods", "ce,crt,focal", "--dataset", "fashion_mnist_lt", "--if", "100", "--preset", "smoke",
         "--device", "cpu"]
ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
TRAINED = re.compile(r"\] (\w+ \S+ IF\S+ seed\d+): (?:training from|resuming from) epoch")


def outcome(results) -> dict:
    return finished_runs(results, ignore={"git_sha"})  # a commit made between two sweeps of this module moves it


def ltbench(*args, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ltbench.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=ONE_THREAD, **popen)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the jobs run: the same arithmetic
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_after_another(tmp_path_factory, fashion_mnist):
    """The sweep under --jobs 1, one thread."""
    results = tmp_path_factory.mktemp("jobs1")
    proc = ltbench(*SWEEP, "--jobs", "1", "--results-dir", str(results))
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return outcome(results)


@pytest.mark.slow
def test_jobs_2_gives_the_rows_of_jobs_1(tmp_path, one_after_another):
    results = tmp_path / "jobs2"
    proc = ltbench(*SWEEP, "--jobs", "2", "--results-dir", str(results))
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "2 jobs at once on cpu, 1 CPU thread(s) each" in out
    got = outcome(results)
    assert set(got) == set(one_after_another) and len(got) == 3
    for run_id, (row, per_class) in one_after_another.items():
        assert row["threads"] == got[run_id][0]["threads"] == "1"
        assert got[run_id][0] == row, run_id  # top-1, many/medium/few, every column but timing
        assert got[run_id][1] == per_class, run_id


@pytest.mark.slow
def test_two_sweeps_on_one_results_dir_train_every_run_once(tmp_path, one_after_another):
    results = tmp_path / "shared"
    first, second = (ltbench(*SWEEP, "--results-dir", str(results)) for _ in range(2))
    outputs = [p.communicate(timeout=600)[0] for p in (first, second)]
    assert first.returncode == second.returncode == 0, outputs
    trained = [label for out in outputs for label in TRAINED.findall(out)]
    assert sorted(trained) == sorted(f"{m} fashion_mnist_lt IF100 seed0" for m in ("ce", "crt", "focal")), outputs
    assert {run_id: row for run_id, (row, _) in outcome(results).items()} == {
        run_id: row for run_id, (row, _) in one_after_another.items()}


def lock_holder(run_dir) -> subprocess.Popen:
    """Another process, holding the run's lock until it is killed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom ltbench import run_lock\n"
         f"with run_lock.holding({str(run_dir)!r}) as held:\n    print(held, flush=True)\n    time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "True"
    return holder


def test_a_killed_holders_lock_is_taken_over(tmp_path):
    run_dir = tmp_path / "results" / "abc123"
    holder = lock_holder(run_dir)
    try:
        with run_lock.holding(run_dir) as held:
            assert not held  # another process trains it
        assert run_lock.holder_pid(run_dir) == holder.pid
        waited = []
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
        assert run_lock.holder_pid(run_dir) is None
        start = time.monotonic()
        # the kernel dropped the dead holder's lock: taken at once, nothing to clean up
        with run_lock.holding(run_dir, wait=True, on_wait=lambda: waited.append(True)) as held:
            assert held
        assert not waited and time.monotonic() - start < 5 and (run_dir / run_lock.LOCK_FILE).exists()
    finally:
        holder.kill()
        holder.wait()


def test_status_names_the_process_training_a_partial_run(tmp_path, capsys):
    from ltbench.sweep import resolve

    store = RunStore(tmp_path / "results")
    spec = resolve("ce", "fashion_mnist_lt", 100, 0, "smoke")
    store.write_spec(spec)
    assert main(["status", "--results-dir", str(store.root)]) == 0
    assert "training now" not in capsys.readouterr().out  # started once, no process on it now
    holder = lock_holder(store.run_dir(spec.run_id))
    try:
        assert main(["status", "--results-dir", str(store.root)]) == 0
        assert f"training now (pid {holder.pid})" in capsys.readouterr().out
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_a_failed_run_does_not_stop_the_other_jobs(tmp_path, fashion_mnist):
    results = tmp_path / "results"
    # a learning rate that makes focal's loss non-finite: that run fails, the others finish
    proc = ltbench(*SWEEP, "--jobs", "2", "--set", "focal.lr=1e30", "--results-dir", str(results))
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1, out
    assert re.search(r"focal fashion_mnist_lt IF100 seed0 \(\w+\): failed: ltbench.train.NonFiniteLoss", out), out
    store = RunStore(results)
    states = {store.read_spec(run_id).method: store.state(run_id) for run_id in store.run_ids()}
    assert states == {"ce": "done", "crt": "done", "focal": "failed"}


@pytest.mark.slow
def test_a_job_killed_mid_run_does_not_stop_the_others(tmp_path, fashion_mnist):
    results = tmp_path / "results"
    proc = ltbench("run", "--methods", "ce,focal", "--dataset", "fashion_mnist_lt", "--if", "100", "--preset", "smoke",
                   "--epochs", "6", "--set", "eval_every=6", "--device", "cpu", "--jobs", "2",
                   "--results-dir", str(results))
    deadline = time.time() + 300
    while not list(results.glob("*/checkpoint.pt")):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the jobs wrote no checkpoints"
        time.sleep(0.02)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert len(children) == 2  # one process per job
    os.kill(int(children[0]), signal.SIGKILL)  # as the kernel's out-of-memory killer would
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out
    assert "failed: its job was killed by signal 9 before writing a result" in out, out
    store = RunStore(results)
    assert sorted(store.state(run_id) for run_id in store.run_ids()) == ["done", "partial"]


@pytest.mark.slow
def test_the_jobs_end_with_a_killed_launcher_and_the_sweep_resumes(tmp_path, fashion_mnist, capfd):
    args = ["run", "--methods", "ce,focal", "--dataset", "fashion_mnist_lt", "--if", "100", "--preset", "smoke",
            "--epochs", "6", "--set", "eval_every=6", "--device", "cpu"]
    results = tmp_path / "results"
    proc = ltbench(*args, "--jobs", "2", "--results-dir", str(results))
    deadline = time.time() + 300
    while not list(results.glob("*/checkpoint.pt")):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the jobs wrote no checkpoints"
        time.sleep(0.02)
    children = [int(pid) for pid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    assert len(children) == 2
    proc.kill()  # kill -9: the launcher has no chance to stop its jobs itself
    out, _ = proc.communicate(timeout=30)
    # two jobs under OMP_NUM_THREADS=1 take a thread each, and the sweep says so
    assert "1 CPU thread(s) each, 2 in all: more than the 1 this process was given (OMP_NUM_THREADS)" in out, out
    gone_by = time.time() + 5
    while any(Path(f"/proc/{pid}").exists() and "State:\tZ" not in _status(pid) for pid in children):
        assert time.time() < gone_by, "the jobs outlived their launcher"
        time.sleep(0.05)
    store = RunStore(results)
    assert "partial" in {store.state(run_id) for run_id in store.run_ids()}
    assert main(args + ["--jobs", "2", "--results-dir", str(results)]) == 0
    assert "resuming from epoch" in capfd.readouterr().out
    assert sorted(store.state(run_id) for run_id in store.run_ids()) == ["done", "done"]


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except OSError:  # ended meanwhile
        return "State:\tZ"


@pytest.mark.slow
def test_ctrl_c_stops_every_job_and_each_resumes(tmp_path, fashion_mnist, one_thread, capfd):
    args = ["run", "--methods", "ce,focal", "--dataset", "fashion_mnist_lt", "--if", "100", "--preset", "smoke",
            "--epochs", "4", "--set", "eval_every=4", "--device", "cpu"]
    straight = tmp_path / "straight"
    assert main(args + ["--results-dir", str(straight)]) == 0
    results = tmp_path / "results"
    # its own session, as a terminal's foreground job: Ctrl-C reaches the launcher and its jobs
    proc = ltbench(*args, "--jobs", "2", "--results-dir", str(results), start_new_session=True,
                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while len(list(results.glob("*/checkpoint.pt"))) < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the jobs wrote no checkpoints"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Run the same command again to resume" in out, out
    store = RunStore(results)
    assert sorted(store.state(run_id) for run_id in store.run_ids()) == ["partial", "partial"], out
    for run_id in store.run_ids():
        with run_lock.holding(store.run_dir(run_id)) as held:
            assert held  # no job outlived the launcher

    assert main(args + ["--jobs", "2", "--results-dir", str(results)]) == 0
    # the jobs write to this process's file descriptor 1, not through sys.stdout
    assert len(re.findall(r"resuming from epoch [123] of 4", capfd.readouterr().out)) == 2
    assert outcome(results) == outcome(straight)


@pytest.mark.parametrize("flags, message", [
    (["--jobs", "0"], "--jobs '0' is not a whole number of at least 1"),
    (["--jobs", "two"], "--jobs 'two' is not a whole number of at least 1"),
    (["--devices", "gpu"], "--devices: unknown device 'gpu'"),
    (["--devices", "cpu", "--device", "cpu"], "--device cpu and --devices cpu both say where runs go"),
    (["--jobs", "2", "--launcher", "slurm"], "--jobs and --devices are options of the local launcher"),
])
def test_bad_jobs_and_devices_are_refused_before_anything_runs(tmp_path, capsys, flags, message):
    results = tmp_path / "results"
    assert main(SWEEP[:-2] + flags + ["--results-dir", str(results)]) == 2
    err = capsys.readouterr().err
    assert message in err and "hint:" in err
    assert not results.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without GPUs")
def test_a_gpu_on_a_machine_without_one_is_refused(tmp_path, capsys):
    assert main(SWEEP[:-2] + ["--devices", "cuda:1", "--results-dir", str(tmp_path)]) == 2
    assert "--devices cuda:1: this machine has 0 CUDA device(s)" in capsys.readouterr().err


def test_the_plan_divides_threads_and_deals_devices_in_turn(monkeypatch):
    threads = torch.get_num_threads()
    assert plan_jobs(None, ["cpu"]) == JobPlan(jobs=1, devices=("cpu",), threads=threads)  # the CPU default
    assert plan_jobs("2", ["cpu"]).threads == max(1, threads // 2)
    plan = JobPlan(jobs=3, devices=("cuda:0", "cuda:1"), threads=1)
    assert [plan.device_for(slot) for slot in range(3)] == ["cuda:0", "cuda:1", "cuda:0"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert visible_gpu("cuda:1") == "6"  # the job sees the GPU this process calls cuda:1, as its only one
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert visible_gpu("cuda:1") == "1"


@pytest.mark.slow
def test_the_sweep_benchmark_times_both_settings(tmp_path, fashion_mnist):
    out = tmp_path / "sweep_jobs.csv"
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "sweep_jobs.py")
    done = subprocess.run([sys.executable, script, "--methods", "ce", "--seeds", "0,1", "--preset", "smoke",
                           "--set", "epochs=1", "--devices", "cpu", "--jobs", "2", "--out", str(out)],
                          capture_output=True, text=True, env=ONE_THREAD, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "--jobs 2 vs --jobs 1:" in done.stdout
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["jobs"], r["runs"]) for r in rows] == [("1", "2"), ("2", "2")]
    assert rows[0]["vs_jobs_1"] == "1.0" and float(rows[1]["vs_jobs_1"]) > 0
    assert rows[0]["mean_top1"] == rows[1]["mean_top1"]  # one thread each: the same sweep, the same numbers


@pytest.mark.slow
def test_on_a_terminal_each_job_has_a_line_and_its_output_a_file(tmp_path, fashion_mnist):
    """Run under a pseudo-terminal, as a user types it: the terminal shows a line per running
    job (its latest epoch), each job's own lines go to <results>/jobs/<run_id>.log."""
    results = tmp_path / "results"
    main_end, job_end = pty.openpty()
    env = dict(ONE_THREAD, TERM="xterm-256color", COLUMNS="160", LINES="40")
    proc = subprocess.Popen([sys.executable, "-m", "ltbench.cli", "run", "--methods", "ce,focal", "--dataset",
                             "fashion_mnist_lt", "--if", "100", "--preset", "smoke", "--epochs", "4", "--device", "cpu",
                             "--jobs", "2", "--results-dir", str(results)],
                            stdin=job_end, stdout=job_end, stderr=job_end, env=env,
                            preexec_fn=lambda: os.umask(0o002))  # a umask that lets the group write
    os.close(job_end)
    chunks = []

    def drain():  # a terminal that is not read stops the writer
        while True:
            try:
                chunk = os.read(main_end, 65536)
            except OSError:  # the other end closed
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    assert proc.wait(timeout=600) == 0
    reader.join(timeout=30)
    os.close(main_end)
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode("utf-8", "replace"))
    store = RunStore(results)
    assert sorted(store.state(run_id) for run_id in store.run_ids()) == ["done", "done"]
    for run_id in store.run_ids():
        log = (results / "jobs" / f"{run_id}.log").read_text()
        assert "epoch 4/4" in log and store.read_spec(run_id).label in log  # the job's own lines
        assert stat.S_IMODE((results / "jobs" / f"{run_id}.log").stat().st_mode) == 0o644  # the store's modes
    assert stat.S_IMODE((results / "jobs").stat().st_mode) == 0o755
    assert re.search(r"\[\d/2\] (ce|focal) fashion_mnist_lt IF100 seed0\s+cpu\s+\d+:\d\d:\d\d\s+(starting|\S)", screen), screen
    assert "running; each job's output is in" in screen, screen


@pytest.mark.parametrize("config, message", [("jobs = 0\n", "--jobs 0 is not a whole number"),
                                             ('devices = ["gpu"]\n', "--devices: unknown device 'gpu'"),
                                             ('devices = "cpu"\njobs = 2\n', None)])
def test_a_config_file_sets_jobs_and_devices(tmp_path, capsys, monkeypatch, config, message):
    import ltbench.launch.jobs as jobs

    planned = []
    monkeypatch.setattr(jobs, "run_jobs", lambda specs, results, plan, **_: planned.append(plan) or {})
    path = tmp_path / "sweep.toml"
    path.write_text(config)
    code = main(SWEEP[:-2] + ["--config", str(path), "--results-dir", str(tmp_path / "results")])
    if message is not None:
        assert code == 2 and message in capsys.readouterr().err
    else:  # the launcher got the file's plan (its runs, not trained here, leave the sweep short)
        assert [(plan.jobs, plan.devices) for plan in planned] == [(2, ("cpu",))]
