"""Migrating results of ltbench 0.1 never writes through a link: a linked run folder stays as
it is wherever it points, and a linked `.superseded` moves nothing out of the results dir."""

import shutil
from pathlib import Path

from ltbench.cli import main
from ltbench.migrate import SUPERSEDED, migrate_store, pending_migrations
from ltbench.results_dir import ResultsDir

FIXTURE = Path(__file__).parent / "fixtures" / "results_v0_1"  # four runs; two focal ones are one experiment


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_linked_run_folder_is_left_as_it_is_with_a_message(tmp_path, capsys):
    results, elsewhere = tmp_path / "results", tmp_path / "elsewhere"
    shutil.copytree(FIXTURE, results)
    linked = sorted(p.name for p in results.iterdir())[0]
    elsewhere.mkdir()
    shutil.move(results / linked, elsewhere / linked)
    (results / linked).symlink_to(elsewhere / linked, target_is_directory=True)
    before = snapshot(elsewhere)

    assert linked not in pending_migrations(results).values()
    assert main(["status", "--results-dir", str(results)]) == 0
    out = capsys.readouterr().out.replace("\n", "")
    assert snapshot(elsewhere) == before  # nothing written where the link points
    assert (results / linked).is_symlink() and (results / linked).resolve() == elsewhere / linked
    assert "is a link" in out and "not migrated" in out
    # the other runs were migrated as usual
    assert sum(1 for run_id in ResultsDir(results).run_ids() if run_id != linked) >= 2


def test_a_linked_superseded_folder_moves_nothing_out_of_the_results_dir(tmp_path):
    results, outside = tmp_path / "results", tmp_path / "outside"
    shutil.copytree(FIXTURE, results)
    outside.mkdir()
    (results / SUPERSEDED).symlink_to(outside, target_is_directory=True)
    messages = []
    renamed = migrate_store(results, log=messages.append)
    assert list(outside.iterdir()) == []
    left = [m for m in messages if "not a folder of the results dir" in m]
    assert len(left) == 1  # the focal twin stays where it was, said so
    twin = next(old for old in renamed if (results / old).is_dir())
    assert (results / twin / "spec.json").is_file()


def test_without_links_the_twin_is_set_aside_inside_the_results_dir(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(FIXTURE, results)
    migrate_store(results, log=lambda *_: None)
    assert (results / SUPERSEDED).is_dir() and not (results / SUPERSEDED).is_symlink()
    assert len(list((results / SUPERSEDED).iterdir())) == 1
