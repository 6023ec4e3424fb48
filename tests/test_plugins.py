"""Another installed package adds a method (`ltbench.methods` entry points) or a dataset
(`ltbench.datasets`), or a new file under methods/ adds a method: it is listed, runs, passes
the conformance checks and appears in the report under its own display name. The method is
the README's example, and every package is built under the test's tmp_path, never in the
source tree."""

import re
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import pytest

from ltbench import registry
from ltbench.cli import main
from ltbench.errors import UserError
from ltbench.testing import CHECKS

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example(first_line: str) -> str:
    """The README's Python block that starts with `first_line`: the tests run what a reader copies."""
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.M | re.S)
    return next(block for block in blocks if block.startswith(first_line))


METHOD_MODULE = readme_example("# methods/label_smoothing.py")

DATASET_MODULE = '''
import numpy as np
from ltbench.data.datasets import DatasetInfo

def read(root):
    """Six classes of 32x32 colour images whose class is their brightness."""
    rng = np.random.default_rng(0)
    def images(per_class):
        y = np.repeat(np.arange(6), per_class)
        x = np.clip(y[:, None, None, None] * 40.0 + rng.normal(20, 15, (len(y), 3, 32, 32)), 0, 255)
        return x.astype(np.uint8), y.astype(np.int64)
    return (*images(120), *images(20))

STRIPES_LT = DatasetInfo("stripes_lt", "Stripes-LT: six synthetic classes, for the plugin test", "cifar", 6, 100,
                         read, display_name="Stripes-LT", shot_rule="oltr")
'''


def install(tmp_path, monkeypatch, module: str, source: str, group: str, entry: str) -> None:
    """An installed distribution: its module and its dist-info with entry points on sys.path."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    dist = tmp_path / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{group}]\n{entry}\n")
    monkeypatch.syspath_prepend(str(tmp_path))


@contextmanager
def installed_method(tmp_path, monkeypatch, module: str, source: str, entry: str):
    """A method plugin installed for the block (`install`), the registry re-read on entry and
    again on leaving, when the plugin is gone."""
    install(tmp_path, monkeypatch, module, source, "ltbench.methods", entry)
    registry.clear()
    try:
        yield
    finally:
        monkeypatch.undo()
        registry.clear()
        sys.modules.pop(module, None)


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    for folder in ("method", "data"):
        (tmp_path / folder).mkdir()
    install(tmp_path / "method", monkeypatch, "my_lt_method", METHOD_MODULE, "ltbench.methods",
            "label_smoothing = my_lt_method:LabelSmoothing")
    install(tmp_path / "data", monkeypatch, "my_lt_data", DATASET_MODULE, "ltbench.datasets",
            "stripes_lt = my_lt_data:STRIPES_LT")
    registry.clear()
    from ltbench.report import names
    names._registered.cache_clear()
    yield
    monkeypatch.undo()
    registry.clear()
    names._registered.cache_clear()
    for module in ("my_lt_method", "my_lt_data"):
        sys.modules.pop(module, None)


@pytest.mark.slow
def test_plugins_are_listed_run_and_reported(plugins, tmp_path, capsys):
    assert {"ce", "label_smoothing"} <= set(registry.methods())
    assert registry.dataset("stripes_lt").title == "Stripes-LT"
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "label_smoothing" in out and "Label smoothing" in out and "Stripes-LT" in out
    assert main(["list", "--settings"]) == 0
    assert "label_smoothing.smoothing" in capsys.readouterr().out

    results, reports = tmp_path / "results", tmp_path / "reports"
    code = main(["run", "--methods", "label_smoothing,ce", "--dataset", "stripes_lt", "--if", "10", "--preset",
                 "smoke", "--set", "smoothing=0.2", "--results-dir", str(results), "--device", "cpu"])
    assert code == 0
    assert main(["report", "--results-dir", str(results), "--out", str(reports)]) == 0
    main_table = (reports / "tables" / "main.md").read_text()
    assert "Label smoothing" in main_table and "Stripes-LT" in main_table and "CE" in main_table


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_a_plugin_method_passes_the_conformance_checks(plugins, check):
    check("label_smoothing")


def test_a_plugin_that_is_not_a_method_or_dataset_is_refused(tmp_path, monkeypatch):
    install(tmp_path, monkeypatch, "bad_plugin", "NOT_A_METHOD = 3\n", "ltbench.methods", "bad = bad_plugin:NOT_A_METHOD")
    registry.clear()
    try:
        with pytest.raises(UserError, match="method plugin 'bad' is not an ltbench.method.Method subclass"):
            registry.methods()
    finally:
        monkeypatch.undo()
        registry.clear()
        sys.modules.pop("bad_plugin", None)


def test_a_new_file_in_methods_is_a_new_method_without_reinstalling(tmp_path, monkeypatch):
    import ltbench_methods

    from ltbench.testing import check_defaults_cite_a_source, check_defaults_resolve

    # the folder as the built-in discovery walks it, with one more file than the source tree has
    (tmp_path / "label_smoothing.py").write_text(METHOD_MODULE)
    monkeypatch.setattr(ltbench_methods, "__path__", [*ltbench_methods.__path__, str(tmp_path)])
    registry.clear()
    try:
        cls = registry.method("label_smoothing")
        assert cls.__module__ == "ltbench_methods.label_smoothing" and cls.title() == "Label smoothing"
        assert list(registry.methods())[-1] == "label_smoothing"  # after the ordered built-ins
        check_defaults_resolve("label_smoothing")
        check_defaults_cite_a_source("label_smoothing")  # held to what a built-in method must say
    finally:
        monkeypatch.undo()
        sys.modules.pop("ltbench_methods.label_smoothing", None)
        vars(ltbench_methods).pop("label_smoothing", None)
        registry.clear()


def test_a_methods_summary_is_its_docstrings_first_paragraph_never_its_bases(monkeypatch):
    from ltbench.method import LinearClassifierMethod
    from ltbench.testing import check_defaults_resolve

    class Documented(LinearClassifierMethod):
        """CE, said over
        two lines (Someone et al. 2030).

        Details a table does not print."""

    class Undocumented(Documented):
        name = "undocumented"

    class Explicit(Documented):
        summary = "set by hand"

    assert Documented.summary == "CE, said over two lines (Someone et al. 2030)"
    assert Undocumented.summary == "" and Explicit.summary == "set by hand"
    monkeypatch.setattr(registry, "method", {"undocumented": Undocumented}.__getitem__)
    with pytest.raises(AssertionError, match="docstring"):
        check_defaults_resolve("undocumented")  # the conformance suite wants a summary
