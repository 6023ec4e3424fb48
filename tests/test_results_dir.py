"""The one reader of a results dir (ltbench.results_dir): what it accepts, what it calls
corrupt and why, and that status, show and the report, which all read through it, agree."""

import json
import shutil
from pathlib import Path

import pytest

from ltbench.cli import main
from ltbench.display import accuracy
from ltbench.errors import CorruptFile
from ltbench.report.load import load_results
from ltbench.results_dir import ResultsDir, inspect, is_legacy, read_result, read_spec
from ltbench.results_schema import RESULT_COLUMNS
from ltbench.store import RunStore, csv_bytes
from ltbench.sweep import resolve

FIXTURE = Path(__file__).parent / "fixtures" / "results_v0_1"
SMOKE = ["run", "--methods", "ce", "--dataset", "fashion_mnist_lt", "--if", "100", "--preset", "smoke",
         "--epochs", "1", "--seeds", "0,1", "--device", "cpu"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, fashion_mnist):
    """Two finished smoke runs (ce seeds 0 and 1), trained once; tests work on copies."""
    results = tmp_path_factory.mktemp("trained") / "results"
    assert main(SMOKE + ["--results-dir", str(results)]) == 0
    return results


@pytest.fixture
def results(two_runs, tmp_path):
    copy = tmp_path / "results"
    shutil.copytree(two_runs, copy)
    return copy


def spec_of(seed: int):
    return resolve("ce", "fashion_mnist_lt", 100, seed, "smoke", {"epochs": "1"})


def edit_row(results: Path, folder_name: str, **changes) -> None:
    path = results / folder_name / "result.csv"
    row = read_result(path.parent)
    path.write_bytes(csv_bytes(RESULT_COLUMNS, [{**row, **changes}]))


def test_a_row_that_names_another_method_is_corrupt_in_status_and_left_out_of_the_report(results, tmp_path,
                                                                                          capsys):
    good, bad = spec_of(0).run_id, spec_of(1).run_id
    edit_row(results, bad, method="focal")

    assert main(["status", "--results-dir", str(results)]) == 0
    out = capsys.readouterr().out
    assert "1 corrupt, 1 done" in out and "disagree with the run's spec.json" in out.replace("\n", "")

    out_dir = tmp_path / "reports"
    assert main(["report", "--results-dir", str(results), "--out", str(out_dir)]) == 0
    loaded = load_results(results)
    assert list(loaded.runs["run_id"]) == [good] and set(loaded.runs["method"]) == {"ce"}
    (left,) = loaded.left_out
    assert (left.kind, left.method, Path(left.path).parent.name) == ("corrupt", "ce", bad)
    assert "method ('focal') disagree with the run's spec.json" in left.reason
    markdown = (out_dir / "report.md").read_text()
    assert "1 finished runs" in markdown or "1 finished run" in markdown
    assert "## Left out" in markdown and "disagree with the run's spec.json" in markdown


def test_status_and_show_print_one_accuracy_alike(results, capsys):
    run_id = spec_of(0).run_id
    edit_row(results, run_id, top1="57.8913", many="61.0456")
    assert main(["status", "--results-dir", str(results)]) == 0
    status = capsys.readouterr().out
    assert main(["show", run_id, "--results-dir", str(results)]) == 0
    show = capsys.readouterr().out
    for out in (status, show):
        assert "57.89" in out and "57.8913" not in out
    assert "61.05" in show and "61.0456" not in show
    assert accuracy("57.8913") == "57.89" and accuracy("") == "—" and accuracy(None) == "—"


def test_the_reader_accepts_a_finished_run_and_names_its_states(results):
    reader = ResultsDir(results)
    done = spec_of(0).run_id
    assert reader.run_ids() == sorted([done, spec_of(1).run_id])
    assert reader.inspect(done) == ("done", "") and reader.read_spec(done) == spec_of(0)
    assert [int(r["class"]) for r in reader.read_per_class(done)] == list(range(10))
    assert [r["epoch"] for r in reader.read_history(done)] == ["1"]
    assert reader.state("nosuchrun") == "missing"
    (results / done / "result.csv").unlink()
    assert reader.inspect(done) == ("partial", "")
    assert reader.read_history("nosuchrun") == []


@pytest.mark.parametrize("change, why", [
    ({"method": "focal"}, "method ('focal') disagree"), ({"seed": "7"}, "seed ('7') disagree"),
    ({"epochs": "3"}, "epochs ('3') disagree"), ({"run_id": "0" * 12}, "not the folder's run"),
    ({"status": "finished"}, "'finished' is not one of done, failed"),
    ({"top1": ""}, "status done but top1 is empty"), ({"top1": "inf"}, "status done but top1 is inf"),
    ({"many": "n/a"}, "not a number: many ('n/a')"), ({"wall_s": "nan"}, "not a number: wall_s"),
    ({"params": "[1, 2]"}, "params is not a JSON object"),
])
def test_a_row_that_disagrees_or_is_not_a_result_is_corrupt(results, change, why):
    run_id = spec_of(0).run_id
    edit_row(results, run_id, **change)
    state, reason = inspect(results / run_id)
    assert state == "corrupt" and why in reason, (change, reason)
    with pytest.raises(CorruptFile, match="result.csv"):
        read_result(results / run_id)


def test_a_failed_row_needs_no_accuracy(results):
    run_id = spec_of(0).run_id
    edit_row(results, run_id, status="failed", top1="", error="CUDA out of memory")
    assert inspect(results / run_id) == ("failed", "")


def test_unreadable_and_malformed_result_files_are_corrupt_with_the_reason(results):
    path = results / spec_of(0).run_id / "result.csv"
    text = path.read_text()
    for content, why in [(text + text.splitlines()[1] + "\n", "expected one data row, found 2"),
                         ("run_id,method\nabc,ce\n", "missing columns dataset, imbalance_factor, profile, "
                          "backbone and 7 more"),
                         (b"\xff\xfe\x00garbage", "unreadable CSV")]:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        state, reason = inspect(path.parent)
        assert state == "corrupt" and why in reason, reason


def test_a_spec_of_another_run_or_none_at_all(results):
    reader = ResultsDir(results)
    first, second = spec_of(0).run_id, spec_of(1).run_id
    shutil.copy(results / second / "spec.json", results / first / "spec.json")
    state, why = reader.inspect(first)
    assert state == "corrupt" and f"the spec of run {second}" in why
    (results / first / "spec.json").write_text("{not json")
    assert "not a run spec" in reader.inspect(first)[1]
    (results / first / "spec.json").unlink()
    with pytest.raises(CorruptFile, match="is missing"):
        reader.read_spec(first)
    assert reader.inspect(first)[0] == "done"  # a row with no spec to disagree with still reads


def test_a_spec_of_ltbench_0_1_is_told_apart_and_not_checked_against(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(FIXTURE, results)
    reader = ResultsDir(results)
    (old, *_) = reader.run_ids()
    data = json.loads((results / old / "spec.json").read_text())
    assert is_legacy(data) and not is_legacy(spec_of(0).to_dict())
    assert read_spec(results / old) is None
    with pytest.raises(CorruptFile, match="not migrated yet"):
        reader.read_spec(old)
    assert reader.inspect(old) == ("done", "")


def test_the_writer_reads_as_the_reader_does(results):
    store, reader = RunStore(results), ResultsDir(results)
    run_id = spec_of(1).run_id
    edit_row(results, run_id, dataset="cifar10_lt")
    assert store.inspect(run_id) == reader.inspect(run_id) and store.state(run_id) == "corrupt"
