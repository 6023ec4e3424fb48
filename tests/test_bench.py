import csv
import json

from ltbench.cli import main


def test_bench_measures_both_paths_and_writes_csv(tmp_path, capsys, fashion_mnist):
    out = tmp_path / "throughput.csv"
    argv = ["bench", "--methods", "ce", "--backbone", "resnet8_cifar", "--batch-size", "32", "--steps", "2",
            "--warmup-steps", "1", "--workers", "1", "--out", str(out), "--json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["method"], r["path"], r["variant"]) for r in rows] == [
        ("ce", "ltbench", "channels_last"), ("ce", "ltbench", "nchw"), ("ce", "reference", "fp32 nchw")]
    for row in rows:
        assert row["images_per_s"] > 0 and 0 <= row["data_share"] <= 1 and row["steps"] == 2
    with open(out) as fh:
        assert [r["path"] for r in csv.DictReader(fh)] == ["ltbench", "ltbench", "reference"]
