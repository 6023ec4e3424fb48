"""Commands that only read start without torch: `ltbench --version`, `--help`, `status`, `show`
and `report` are each run in a process of their own, and what that process imported by the
time it exits is checked."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ltbench.cli import main
from ltbench.results_dir import ResultsDir

REPO = Path(__file__).resolve().parents[1]
# run as the `ltbench` console script runs: ltbench.cli.main, then the process exits; an
# atexit hook records what was imported, whatever way the command ended (argparse's
# --version and --help end it with SystemExit)
PROBE = """
import atexit, json, sys
def record():
    with open(sys.argv[1], "w") as fh:
        json.dump(sorted(sys.modules), fh)
atexit.register(record)
from ltbench.cli import main
sys.exit(main(sys.argv[2:]))
"""
HEAVY = ("torch", "timm")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, fashion_mnist):
    results = tmp_path_factory.mktemp("startup") / "results"
    assert main(["run", "--methods", "ce", "--dataset", "fashion_mnist_lt", "--if", "100", "--preset", "smoke",
                 "--epochs", "1", "--device", "cpu", "--results-dir", str(results)]) == 0
    return results


def imported(argv: list[str], tmp_path: Path) -> set[str]:
    record = tmp_path / "modules.json"
    done = subprocess.run([sys.executable, "-c", PROBE, str(record), *argv], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return set(json.loads(record.read_text()))


@pytest.mark.parametrize("command", ["--version", "--help", "status", "show", "report"])
def test_reading_commands_import_neither_torch_nor_timm(command, finished, tmp_path):
    (run_id,) = ResultsDir(finished).run_ids()
    argv = {"--version": ["--version"], "--help": ["--help"],
            "status": ["status", "--results-dir", str(finished)],
            "show": ["show", run_id[:6], "--results-dir", str(finished)],
            "report": ["report", "--results-dir", str(finished), "--out", str(tmp_path / "reports")]}[command]
    modules = imported(argv, tmp_path)
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert not heavy, f"`ltbench {' '.join(argv)}` imported {heavy[:5]}"
    assert "ltbench.train" not in modules and "ltbench.runner" not in modules
    if command != "report":  # a table of runs needs no data frames
        assert "pandas" not in modules
    if command == "report":
        assert (tmp_path / "reports" / "report.md").is_file()  # the report was written, not skipped


def test_the_probe_sees_torch_where_a_command_imports_it(tmp_path):
    """The check can fail: `ltbench list` reads every method, and methods are torch modules."""
    assert "torch" in imported(["list"], tmp_path)
