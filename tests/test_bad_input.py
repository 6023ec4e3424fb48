"""Every bad input ends the same way: exit 2, one line `ltbench: error: ...` (and at most a
hint line), and the results dir exactly as it was, byte for byte.

One table of cases, each a command line and the words its error must contain. A case may
prepare files first (a config, a damaged dataset, a corrupt store file); a `{name}` in its
command line is replaced by the path the preparation gave that name.
"""

import gzip
import hashlib
import shutil
import struct

import numpy as np
import pytest
import torch

from cifar_files import write_tiny_cifar
from ltbench.cli import main
from ltbench.store import RunStore
from ltbench.sweep import resolve

SMOKE = ["run", "--methods", "ce", "--dataset", "fashion_mnist_lt", "--if", "100", "--preset", "smoke",
         "--results-dir", "{results}"]
# a small Fashion-MNIST in the IDX format, damaged as the case says; seed 1, which the results
# dir has not run (seed 0 is done there, and a done run needs no data)
FAKE = ["--data-root", "{data}", "--seeds", "1"]
IDX_NAMES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
             "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}


def idx_bytes(array: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def fake_fashion(root, damage=None, gz=False):
    """200 training and 10 test images a class, enough for the smoke preset; `damage` gets
    {key: bytes} to change before the files are written."""
    rng = np.random.default_rng(0)
    train_y = np.repeat(np.arange(10, dtype=np.uint8), 200)
    test_y = np.repeat(np.arange(10, dtype=np.uint8), 10)
    files = {"train_x": idx_bytes(rng.integers(0, 256, (len(train_y), 28, 28), dtype=np.uint8)),
             "train_y": idx_bytes(train_y),
             "test_x": idx_bytes(rng.integers(0, 256, (len(test_y), 28, 28), dtype=np.uint8)),
             "test_y": idx_bytes(test_y)}
    if damage:
        damage(files)
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for key, data in files.items():
        if gz:
            (raw / f"{IDX_NAMES[key]}.gz").write_bytes(gzip.compress(data))
        else:
            (raw / IDX_NAMES[key]).write_bytes(data)
    return root


def labels_out_of_range(files):
    labels = np.repeat(np.arange(10, dtype=np.uint8), 200)
    labels[::7] = 200  # one label in seven, as the audit planted them
    files["train_y"] = idx_bytes(labels)


def swapped_labels(files):
    files["train_y"], files["test_y"] = files["test_y"], files["train_y"]


def empty_labels(files):
    files["train_y"] = b""


def write(tmp_path, name, text: str | bytes):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def config(text):
    return lambda tmp_path, results: {"config": write(tmp_path, "sweep.toml", text)}


def data(damage=None):
    return lambda tmp_path, results: {"data": fake_fashion(tmp_path / "data", damage)}


def damaged_cifar(tmp_path, results):
    """A CIFAR-10 folder whose files are all there, one of them not a CIFAR batch: only
    reading it tells, and a dry run reads it as the run would."""
    folder = write_tiny_cifar(tmp_path / "cifar")
    (folder / "data_batch_2").write_bytes(b"\x80\x04K\x07.")  # a pickled 7
    return {"cifar": tmp_path / "cifar"}


CIFAR = ["run", "--methods", "ce", "--dataset", "cifar10_lt", "--if", "10", "--preset", "smoke", "--n-max", "10",
         "--data-root", "{cifar}", "--results-dir", "{results}"]


def corrupt_submissions(tmp_path, results):
    (results / "slurm").mkdir()
    (results / "slurm" / "submissions.json").write_text("{not json")
    return {}


def a_file(tmp_path, results):
    return {"file": write(tmp_path, "a_file", "x"), "binary": write(tmp_path, "binary.toml", b"\xff\xfe\x00\x81")}


def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def smoke_with_if(factor: str) -> list[str]:
    """SMOKE with another imbalance factor."""
    at = SMOKE.index("--if") + 1
    return SMOKE[:at] + [factor] + SMOKE[at + 1:]


def case(name, argv, message, prepare=None, environment=None):
    """One bad input: its command line, words its error must contain, what prepares files for
    it (returns {name: path} for the command line's `{name}`s) and the environment it needs."""
    return pytest.param(argv, message, prepare, environment, id=name)


CASES = [
    # settings out of range or not finite: the error names the setting and its value
    *(case(f"set-{value}", SMOKE + ["--set", value], value)
      for value in ("epochs=inf", "eval_every=1e400", "lr=nan", "momentum=inf", "weight_decay=-1", "lr=-5")),
    case("lr-overflow", SMOKE + ["--set", "lr=1e400"], "lr=inf"),
    case("gamma-nan", SMOKE + ["--methods", "focal", "--set", "focal.gamma=nan"], "focal.gamma=nan"),
    case("eval_every-zero", SMOKE + ["--set", "eval_every=0"], "eval_every=0"),
    case("n-max-zero", SMOKE + ["--n-max", "0"], "n_max=0"),
    case("epochs-zero", SMOKE + ["--epochs", "0"], "epochs=0"),
    case("batch-size-text", SMOKE + ["--batch-size", "many"], "batch_size=many"),
    case("n-max-overflow", SMOKE + ["--n-max", "1e400"], "n_max=1e400"),
    case("gamma-negative", SMOKE + ["--methods", "focal", "--set", "gamma=-1"], "gamma=-1"),
    case("milestones-mismatch", SMOKE + ["--set", "milestones=0.5"], "same length"),
    # settings that each pass on their own and not together: both named, with their values
    case("warmup-outlasts-the-run", SMOKE + ["--epochs", "200", "--set", "warmup_epochs=500"],
         "warmup_epochs=500 with epochs=200: the warm-up must end before the last epoch"),
    case("warmup-after-fewer-epochs", SMOKE + ["--set", "warmup_epochs=2"], "warmup_epochs=2 with epochs=2"),
    case("milestones-out-of-order", SMOKE + ["--set", "milestones=0.9,0.5"],
         "milestones=0.9,0.5: milestones must increase"),
    case("drw-start-after-the-last-epoch", SMOKE + ["--methods", "ldam_drw", "--epochs", "200", "--set",
                                                    "drw_start=0.999"],
         "ldam_drw.drw_start=0.999 with epochs=200: re-weighting would start after the last epoch"),
    case("drw-start-after-fewer-epochs", SMOKE + ["--methods", "ce_drw", "--epochs", "3", "--set", "drw_start=0.9"],
         "ce_drw.drw_start=0.9 with epochs=3"),
    case("set-key-of-a-method-not-in-the-sweep", SMOKE + ["--set", "gamma=2"],
         "--set gamma: ce has no setting gamma; it is focal.gamma"),
    case("set-method-key-of-another-method", SMOKE + ["--set", "ce.gamma=2"], "it is focal.gamma"),
    case("set-not-key-value", SMOKE + ["--set", "lr"], "is not KEY=VALUE"),
    case("set-unknown-key", SMOKE + ["--set", "gama=2"], "unknown --set key 'gama'"),
    # the grid
    case("if-1e9", smoke_with_if("1e9"), "leaves the tail classes no images"),
    case("if-inf", smoke_with_if("inf"), "not a finite number"),
    case("if-nan", smoke_with_if("nan"), "not a finite number"),
    case("if-below-1", smoke_with_if("0.5"), "below 1"),
    case("if-text", smoke_with_if("ten"), "is not a number"),
    case("seeds-1e23", SMOKE + ["--seeds", "1e23"], "seed '1e23' is not an integer"),
    case("seeds-too-large", SMOKE + ["--seeds", str(2**32)], "out of range"),
    case("seeds-negative", SMOKE + ["--seeds", "-1"], "seed -1 is out of range: a seed must be >= 0"),
    case("unknown-method", SMOKE + ["--methods", "cee"], "unknown method 'cee'"),
    case("unknown-dataset", SMOKE + ["--dataset", "cifar11_lt"], "unknown dataset"),
    case("unknown-preset", SMOKE + ["--preset", "fast"], "unknown preset 'fast'"),
    case("unknown-backbone", SMOKE + ["--backbone", "resnet33_cifar"], "unknown backbone"),
    case("unknown-profile", SMOKE + ["--profile", "linear"], "profile"),
    case("fixed-if-changed", ["run", "--methods", "ce", "--dataset", "imagenet_lt", "--if", "10", "--results-dir",
                              "{results}"], "comes with its long-tailed split"),
    case("show-spec-alone", SMOKE + ["--show-spec"], "--show-spec goes with --dry-run"),
    case("grid-incomplete", ["run", "--methods", "ce", "--results-dir", "{results}"], "--dataset, --if not given"),
    # where and how
    case("device-cuda-without-gpu", SMOKE + ["--device", "cuda"], "no CUDA device", environment=no_gpu),
    case("device-cuda-3-without-gpu", SMOKE + ["--config", "{config}"],
         "0 CUDA device(s)", config('device = "cuda:3"\n'), environment=no_gpu),
    case("device-unknown", SMOKE + ["--device", "gpu"], "invalid choice: 'gpu'"),
    case("launcher-unknown", SMOKE + ["--launcher", "pbs"], "invalid choice: 'pbs'"),
    case("slurm-flag-without-slurm", SMOKE + ["--slurm-partition", "gpu"], "--slurm-partition"),
    case("slurm-wait-without-slurm", SMOKE + ["--wait"], "--wait"),
    case("slurm-config-binary", SMOKE + ["--launcher", "slurm", "--slurm-config", "{binary}"],
         "not a text file", a_file),
    case("slurm-time-zero", SMOKE + ["--launcher", "slurm", "--slurm-time", "0"], "time must be at least 1"),
    case("results-dir-empty", SMOKE[:-1] + [""], "--results-dir is empty"),
    case("data-option-unknown", SMOKE + ["--data-option", "imagenet_lt.imageroot=/x"], "unknown data option"),
    case("data-option-not-key-value", SMOKE + ["--data-option", "imagenet_lt"], "is not DATASET.KEY=VALUE"),
    # config files
    case("config-missing", SMOKE + ["--config", "{results}/nothere.toml"], "does not exist"),
    case("config-directory", SMOKE + ["--config", "{results}"], "is a directory"),
    case("config-binary", SMOKE + ["--config", "{binary}"], "not a text file", a_file),
    case("config-empty-path", SMOKE + ["--config", ""], "is a directory"),
    case("config-broken-toml", ["run", "--config", "{config}"], "not valid TOML", config("methods = [\n")),
    case("config-unknown-key", ["run", "--config", "{config}"], "unknown config key", config('methodz = ["ce"]\n')),
    case("config-set-not-table", ["run", "--config", "{config}"], "`set` must be a table", config('set = "lr=0.1"\n')),
    case("config-data-not-table", ["run", "--config", "{config}"], "`data` must be a table", config("data = 3\n")),
    case("config-data-entry-not-table", ["run", "--config", "{config}"],
         "must be a table of paths", config('[data]\nimagenet_lt = "x"\n')),
    case("config-if-wrong-type", ["run", "--config", "{config}"], "`if` must be a list", config("if = true\n")),
    case("config-seeds-wrong-type", ["run", "--config", "{config}"],
         "`seeds` must be a list", config("seeds = {a = 1}\n")),
    case("config-seeds-1e23", SMOKE + ["--config", "{config}"], "out of range", config("seeds = [1e23]\n")),
    case("config-seeds-fraction", SMOKE + ["--config", "{config}"], "not an integer", config("seeds = [1.5]\n")),
    case("config-results-dir-empty", SMOKE[:-2] + ["--config", "{config}"],
         "not a folder name", config('results_dir = ""\n')),
    case("config-device-unknown", SMOKE + ["--config", "{config}"], "unknown device 'gpu'", config('device = "gpu"\n')),
    case("config-set-wrong-type", SMOKE + ["--config", "{config}"], "lr=", config('[set]\nlr = "fast"\n')),
    # a sweep file's values keep their TOML types: a number in quotes is text, as "fast" is
    case("config-epochs-text", SMOKE + ["--config", "{config}"], 'epochs="2" in ', config('epochs = "2"\n')),
    case("config-set-number-text", SMOKE + ["--config", "{config}"], 'lr="0.05" in ', config('[set]\nlr = "0.05"\n')),
    case("config-set-list-text", SMOKE + ["--config", "{config}"], 'milestones="0.5,0.9" in ',
         config('[set]\nmilestones = "0.5,0.9"\n')),
    case("config-method-set-text", SMOKE + ["--methods", "focal", "--config", "{config}"], 'focal.gamma="2" in ',
         config('[set.focal]\ngamma = "2"\n')),
    case("config-epochs-inf", ["run", "--config", "{config}", "--results-dir", "{results}"],
         "epochs=inf", config('methods = "ce"\ndataset = "fashion_mnist_lt"\nif = 10\nepochs = inf\n')),
    # data
    case("data-missing", SMOKE + ["--data-root", "{results}/no-data", "--seeds", "1"], "Fashion-MNIST not found"),
    case("dry-run-data-missing", SMOKE + ["--data-root", "{results}/no-data", "--seeds", "1", "--dry-run"],
         "Fashion-MNIST not found"),
    case("idx-labels-empty", SMOKE + FAKE, "is empty (0 bytes)", data(empty_labels)),
    case("cifar-batch-not-a-dict", CIFAR, "data_batch_2 is not a CIFAR batch file", damaged_cifar),
    case("dry-run-cifar-batch-not-a-dict", CIFAR + ["--dry-run"], "data_batch_2 is not a CIFAR batch file",
         damaged_cifar),
    case("idx-labels-out-of-range", SMOKE + FAKE, "label(s) out of range 0..9", data(labels_out_of_range)),
    case("idx-labels-swapped", SMOKE + FAKE, "swapped", data(swapped_labels)),
    case("idx-truncated", SMOKE + FAKE, "truncated", data(lambda f: f.update(test_x=f["test_x"][:-5]))),
    case("idx-not-idx", SMOKE + FAKE, "not a uint8 IDX file", data(lambda f: f.update(test_y=b"PK\x03\x04" * 8))),
    # other commands
    case("status-missing-dir", ["status", "--results-dir", "{results}/nothere"], "does not exist"),
    case("status-results-dir-a-file", ["status", "--results-dir", "{file}"], "is not a folder", a_file),
    case("run-results-dir-a-file", SMOKE[:-1] + ["{file}"] + ["--seeds", "1"], "not writable", a_file),
    case("status-results-dir-empty", ["status", "--results-dir", ""], "--results-dir is empty"),
    case("status-corrupt-submissions", ["status", "--results-dir", "{results}"],
         "submissions.json", corrupt_submissions),
    case("report-out-is-a-file", ["report", "--results-dir", "{results}", "--out", "{file}"],
         "is a file, not a folder", a_file),
    case("report-results-dir-empty", ["report", "--results-dir", ""], "--results-dir is empty"),
    case("report-results-dir-missing", ["report", "--results-dir", "{results}/nothere"], "does not exist"),
    case("fetch-unknown-dataset", ["fetch-data", "mnist"], "unknown dataset that fetch-data can fetch"),
    case("list-unknown-method", ["list", "cee"], "unknown method 'cee'"),
    case("unknown-command", ["train"], "invalid choice: 'train'"),
]


def snapshot(root) -> dict:
    """Every path under root with its mode and, for files, a hash of its bytes."""
    return {str(p.relative_to(root)): (p.stat().st_mode,
                                       hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def store_template(tmp_path_factory):
    """A results dir holding one finished smoke run, as the bad inputs find it."""
    root = tmp_path_factory.mktemp("template") / "results"
    store = RunStore(root)
    spec = resolve("ce", "fashion_mnist_lt", 100, 0, "smoke")
    store.write_spec(spec)
    store.save_checkpoint(spec, {"epoch": 1, "weights": torch.zeros(3)})
    store.write_result({"run_id": spec.run_id, "method": "ce", "dataset": "fashion_mnist_lt",
                        "imbalance_factor": 100.0, "seed": 0, "status": "done", "top1": 42.0},
                       [{"class": 0, "n_train": 200, "correct": 1, "total": 2}])
    return root


@pytest.mark.parametrize("argv, message, prepare, environment", CASES)
def test_bad_input_is_one_clear_line_and_writes_nothing(argv, message, prepare, environment, tmp_path,
                                                         store_template, capsys, monkeypatch):
    results = tmp_path / "results"
    shutil.copytree(store_template, results)
    monkeypatch.delenv("LTBENCH_SLURM_CONFIG", raising=False)
    if environment is not None:
        environment(monkeypatch)
    paths = {"results": results, **(prepare(tmp_path, results) if prepare else {})}
    before = snapshot(results)
    argv = [arg.format(**paths) for arg in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    lines = err.rstrip("\n").splitlines()
    assert code == 2, err
    assert lines and lines[0].startswith("ltbench: error: ") and message in lines[0], err
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("  hint: ")), err
    assert snapshot(results) == before


def test_the_table_counts(capsys):
    """The figure the issue asks for: bad inputs tried (each case above is one)."""
    with capsys.disabled():
        print(f"\n{len(CASES)} bad inputs in the table")
    assert len(CASES) >= 60


@pytest.mark.parametrize("error, says", [
    (FileNotFoundError(2, "No such file or directory", "/x/y"), "No such file or directory: /x/y"),
    (PermissionError(13, "Permission denied", "/x"), "Permission denied: /x"),
    (OSError(28, "No space left on device"), "No space left on device"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "invalid start byte"),
    (OverflowError("int too large to convert"), "int too large to convert"),
    (__import__("json").JSONDecodeError("Expecting value", "x", 0), "Expecting value"),
    (__import__("csv").Error("line contains NUL"), "line contains NUL"),
])
def test_expected_failures_end_in_one_line_at_the_cli(error, says, monkeypatch, capsys, tmp_path):
    import ltbench.status

    def fails(results_dir):
        raise error

    monkeypatch.setattr(ltbench.status, "status", fails)
    assert main(["status", "--results-dir", str(tmp_path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("ltbench: error: ") and says in lines[0]
    assert lines[1].startswith("  hint: ")


@pytest.mark.parametrize("bug", [RuntimeError("a bug"), KeyError("a bug"), TypeError("a bug")])
def test_a_bug_keeps_its_traceback(bug, monkeypatch, tmp_path):
    import ltbench.status

    def fails(results_dir):
        raise bug

    monkeypatch.setattr(ltbench.status, "status", fails)
    with pytest.raises(type(bug)):
        main(["status", "--results-dir", str(tmp_path)])
