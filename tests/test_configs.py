"""Every shipped config resolves to what it says: each file states, for each of its methods,
the values a run resolves to in `# expect METHOD: KEY=VALUE ...` lines, and `ltbench run
--config FILE --dry-run --show-spec` must give exactly those."""

import json
import re
from pathlib import Path

import pytest

from ltbench import registry
from ltbench.cli import main
from ltbench.settings import SETTINGS, SPEC_FIELDS
from ltbench.sweep import read_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.toml"))
EXPECT = re.compile(r"^#\s*expect\s+(\w+):\s*(.+)$")
# what every file must state for every method it runs
REQUIRED = {"schedule", "epochs", "batch_size", "lr"}


def expectations(path: Path) -> dict[str, dict[str, str]]:
    """{method: {key: raw value}} from the file's `# expect` lines."""
    stated = {}
    for line in path.read_text().splitlines():
        match = EXPECT.match(line.strip())
        if match:
            method, pairs = match.groups()
            stated[method] = dict(pair.split("=", 1) for pair in pairs.split())
    return stated


def test_there_are_configs():
    assert CONFIGS, "configs/ has no .toml file"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_states_what_each_of_its_methods_resolves_to(path):
    stated = expectations(path)
    methods = read_config(path)["methods"]
    assert set(stated) == set(methods), f"{path.name}: `# expect METHOD:` lines for exactly {methods}"
    for method, values in stated.items():
        assert REQUIRED <= set(values), f"{path.name}: {method} must state {sorted(REQUIRED - set(values))}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_resolves_to_what_it_states(path, tmp_path, capsys):
    assert main(["run", "--config", str(path), "--dry-run", "--show-spec", "--results-dir", str(tmp_path)]) == 0
    specs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    stated = expectations(path)
    assert {s["method"] for s in specs} == set(stated)
    for spec in specs:
        method = spec["method"]
        dataset = registry.dataset(spec["dataset"])
        schemas = {cls.name: cls.settings(dataset) for cls in registry.method(method).chain()}
        for key, raw in stated[method].items():
            if key in SETTINGS:
                want = SETTINGS[key].coerce(key, raw)
                got = spec[key] if key in SPEC_FIELDS else spec["params"][key]
            else:
                owner = next((o for o in reversed(list(schemas)) if key in schemas[o]), None)
                assert owner is not None, f"{path.name}: {method} has no setting {key}"
                want = schemas[owner][key].coerce(key, raw)
                got = spec["hyperparameters"][owner][key]
            assert got == pytest.approx(want), f"{path.name}: {method} resolves {key}={got}, the file says {raw}"
        assert spec["preset"] == "paper", f"{path.name}: {method} is labelled {spec['preset']}, not the paper protocol"
