"""A method written outside the repository trains on the multi-expert backbone (ltbench.experts):
an installed package whose method builds the backbone with two experts sharing its early
layers and combines one head per expert. It passes the conformance checks, runs, and its run
records its forward FLOPs, which `ltbench show` prints."""

import re

import pytest

from ltbench.cli import main
from ltbench.store import RunStore
from ltbench.testing import CHECKS
from test_plugins import installed_method

EXPERTS_MODULE = '''
import torch
import torch.nn.functional as F
from torch import nn

from ltbench.experts import create_expert_backbone, expert_form
from ltbench.method import Method
from ltbench.settings import Setting


class ExpertsCE(Method):
    """Cross-entropy on each of several experts sharing early layers, their logits averaged."""

    name, display_name = "experts_ce", "Experts CE"
    hyperparameters = {"num_experts": Setting(2, "experts on the shared early layers", low=1, high=8,
                                              source="this plugin's own choice")}

    @classmethod
    def check_backbone(cls, name):
        expert_form(name)  # a UserError, at resolve time, for a backbone with no multi-expert form

    @classmethod
    def create_backbone(cls, name, in_chans, hyperparameters):
        return create_expert_backbone(name, in_chans, hyperparameters[cls.name]["num_experts"])

    def __init__(self, hp, class_counts, feature_dim):
        super().__init__(hp, class_counts, feature_dim)
        self.heads = nn.ModuleList(nn.Linear(feature_dim, self.num_classes) for _ in range(hp["num_experts"]))

    def expert_logits(self, features):  # features: [batch, experts, dim]
        return [head(features[:, k]) for k, head in enumerate(self.heads)]

    def logits(self, features):
        return torch.stack(self.expert_logits(features), 1).mean(1)

    def loss(self, backbone, batches, progress):
        batch = batches["main"]
        per_expert = self.expert_logits(backbone(batch.views[0]))
        return sum(F.cross_entropy(logits.float(), batch.labels) for logits in per_expert)
'''


@pytest.fixture
def experts_plugin(tmp_path, monkeypatch):
    with installed_method(tmp_path, monkeypatch, "my_experts_method", EXPERTS_MODULE,
                          "experts_ce = my_experts_method:ExpertsCE"):
        yield


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_a_plugin_on_the_expert_backbone_passes_the_conformance_checks(experts_plugin, check):
    check("experts_ce")


@pytest.mark.slow
def test_a_plugin_on_the_expert_backbone_runs_and_records_its_flops(experts_plugin, tmp_path, fashion_mnist, capsys):
    results = tmp_path / "results"
    smoke = ["run", "--dataset", "fashion_mnist_lt", "--if", "100", "--preset", "smoke", "--device", "cpu",
             "--results-dir", str(results)]
    assert main([*smoke, "--methods", "experts_ce,ce"]) == 0
    assert main([*smoke, "--methods", "experts_ce", "--set", "experts_ce.num_experts=1"]) == 0
    store = RunStore(results)
    rows = {(r["method"], r["params"]): r for r in map(store.read_result, store.run_ids())}
    flops = {(method, '"num_experts": 1' in params): int(r["forward_flops"]) for (method, params), r in rows.items()}
    one, two, ce = flops["experts_ce", True], flops["experts_ce", False], flops["ce", False]
    # the second expert adds its later stages and head, the shared first stage is counted once
    assert one < two < 2 * one
    assert ce > 0 and one != ce  # the expert's stages are RIDE's reduced widths, ce's the plain ResNet's
    capsys.readouterr()
    run_id = next(r["run_id"] for r in rows.values() if r["method"] == "experts_ce" and int(r["forward_flops"]) == two)
    assert main(["show", run_id, "--results-dir", str(results)]) == 0
    shown = capsys.readouterr().out
    assert re.search(rf"forward GFLOPs \(one image\)\s*│\s*{two / 1e9:.4g}", shown), shown
