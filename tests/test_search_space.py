"""What an equal-budget search draws: each registered method's space, drawn by a real Optuna study,
gives values every setting accepts and every run resolves; a declaration that is not a range
the setting can take is refused when declared."""

import subprocess
import sys
from dataclasses import replace

import optuna
import pytest

from ltbench import registry
from ltbench.cli import main
from ltbench.errors import UserError
from ltbench.search_space import distributions, search_space, setting_value, suggest
from ltbench.settings import EXECUTION, SETTINGS, Search, Setting
from ltbench.sweep import TRAINER, resolve
from ltbench.testing import check_search_space_is_valid_and_sourced
from ltbench_methods.ce_drw import CrossEntropyDRW
from ltbench_methods.focal import Focal

optuna.logging.set_verbosity(optuna.logging.WARNING)
TRIALS = 12


def draws(space, seed: int, n: int = TRIALS) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    drawn = []
    for _ in range(n):
        trial = study.ask()
        drawn.append(suggest(space, trial))
        study.tell(trial, 0.0)
    return drawn


@pytest.mark.parametrize("method", list(registry.methods()))
def test_every_draw_is_a_value_its_setting_takes_inside_its_range(method):
    spec = resolve(method, "cifar10_lt", 100, 0, "paper")
    space = search_space(spec)
    assert {"lr", "weight_decay"} <= {d.name for d in space}
    for drawn in draws(space, seed=0):
        assert set(drawn) == {(d.owner, d.key) for d in space}
        for d in space:
            value = drawn[d.owner, d.key]
            d.setting.check(d.name, value)
            if d.search.choices is not None:
                assert value in d.search.choices, (d.name, value)
            else:
                assert d.search.low <= value <= d.search.high, (d.name, value)
                assert isinstance(value, int if d.draws_ints else float), (d.name, value)
        run = resolve(method, "cifar10_lt", 100, 0, "paper", drawn)
        assert all(setting_value(run, owner, key) == value for (owner, key), value in drawn.items())


def test_the_same_seed_draws_the_same_settings_and_another_seed_others():
    space = search_space(resolve("ldam_drw", "cifar10_lt", 100, 0, "paper"))
    assert draws(space, seed=3) == draws(space, seed=3)
    assert draws(space, seed=3) != draws(space, seed=4)


def test_the_distributions_ask_a_study_for_the_same_space():
    space = search_space(resolve("cb_focal", "cifar10_lt", 100, 0, "paper"))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask(distributions(space))
    assert set(trial.params) == {d.name for d in space}
    assert trial.params["cb_focal.gamma"] in (0.5, 1.0, 2.0)
    assert 0.1 * 2e-4 <= trial.params["weight_decay"] <= 10 * 2e-4


def test_an_int_setting_draws_ints_on_its_scale():
    setting = Setting(4, "images per class draw", low=1, high=100, search=Search(1, 64, log=True, source="a test"))
    spec = resolve("crt", "cifar10_lt", 100, 0, "paper")
    space = [d if d.key != "crt_lr" else replace(d, key="crt_per_class", setting=setting,
                                                 search=setting.searched("crt.crt_per_class", 4))
             for d in search_space(spec)]
    dimension = next(d for d in space if d.key == "crt_per_class")
    assert dimension.scale == "int, log" and dimension.describe() == "1 .. 64"
    values = [drawn["crt", "crt_per_class"] for drawn in draws(space, seed=1)]
    assert all(type(v) is int and 1 <= v <= 64 for v in values) and len(set(values)) > 1


def test_a_relative_range_is_centred_on_the_runs_own_value():
    assert SETTINGS["lr"].search.relative and SETTINGS["weight_decay"].search.relative
    hybrid = {d.name: d.search for d in search_space(resolve("sc_hybrid", "cifar100_lt", 100, 0, "paper"))}
    assert hybrid["lr"].low == pytest.approx(0.5 / 10**0.5) and hybrid["lr"].high == pytest.approx(0.5 * 10**0.5)
    # the quick preset scales the hybrid's lr 0.5 at batch 512 to 0.125 at 128: the range moves with it
    quick = {d.name: d.search for d in search_space(resolve("sc_hybrid", "cifar100_lt", 100, 0, "quick"))}
    assert quick["lr"].low == pytest.approx(0.125 / 10**0.5)
    crt = {d.name: d.search for d in search_space(resolve("crt", "imagenet_lt", 256, 0, "paper"))}
    assert crt["crt.crt_lr"].high == pytest.approx(0.2 * 10**0.5)


def test_a_range_around_a_value_far_from_the_papers_is_refused_by_name():
    spec = resolve("ce", "cifar10_lt", 100, 0, "paper", {"weight_decay": "0.5"})
    with pytest.raises(UserError, match=r"weight_decay: the search range 0.05 .. 5 leaves what the setting allows "
                                        r"\(>= 0 and <= 1\)"):
        search_space(spec)


@pytest.mark.parametrize("declare, message", [
    (lambda: Search(1.0, 1.0), "low must be below high"),
    (lambda: Search(0.0, 1.0, log=True), "a log scale needs a positive range"),
    (lambda: Search(0.1, 1.0, choices=("a", "b")), "not both"),
    (lambda: Search(choices=(1.0,)), "two or more values"),
    (lambda: Search(choices=(0.5, 0.5)), "repeat a value"),
    (lambda: Search(0.5), "needs finite numbers low and high"),
    (lambda: Setting(0.5, low=0, high=1, search=Search(0.5, 2.0)), r"0.5 .. 2 leaves what the setting allows"),
    (lambda: Setting(True, search=Search(0.0, 1.0)), "only a number has a range"),
    (lambda: Setting([0.8, 0.9], search=Search(0.1, 0.9)), "only a number has a range"),
    (lambda: Setting(4, low=1, search=Search(1.5, 8.0)), "whole ends"),
    (lambda: Setting(4, low=1, search=Search(0.5, 2.0, relative=True)), "absolute"),
    (lambda: Setting(0.0, low=0, search=Search(0.1, 10.0, relative=True)), "needs a positive value"),
    (lambda: Setting("a", choices=("a", "b"), search=Search(choices=("a", "c"))), r"a, c leaves what"),
    (lambda: Setting(1.0, search=Search(choices=(1.0, "x"))), "is not a float"),
    (lambda: Setting(True, kind=EXECUTION, search=Search(choices=(True, False))), "execution setting"),
])
def test_a_search_that_is_not_a_range_its_setting_takes_is_refused_when_declared(declare, message):
    with pytest.raises(ValueError, match=message):
        declare()


def test_a_dataset_default_is_checked_against_the_range_again():
    from ltbench.settings import with_default

    temperature = registry.method("psc_hybrid").hyperparameters["temperature"]
    assert with_default(temperature, 1.0).search is temperature.search  # the paper's CIFAR-10 tau, inside
    with pytest.raises(ValueError, match="leaves what the setting allows"):
        with_default(replace(SETTINGS["lr"], high=1.0), 0.9)  # a decade around 0.9 passes lr <= 1


@pytest.fixture
def extra_method(monkeypatch):
    """Register one more method, as a plugin would be."""
    def add(cls):
        known = {**registry.methods(), cls.name: cls}
        monkeypatch.setattr(registry, "methods", lambda: known)
    return add


def test_the_conformance_check_refuses_an_unsourced_range(extra_method):
    class UnsourcedGamma(Focal):
        """Focal loss whose search range says nothing of where it comes from."""

        name = "unsourced_gamma"
        hyperparameters = {**Focal.hyperparameters,
                           "gamma": replace(Focal.hyperparameters["gamma"], search=Search(0.0, 5.0))}

    extra_method(UnsourcedGamma)
    with pytest.raises(AssertionError, match="no source for the search range of unsourced_gamma.gamma"):
        check_search_space_is_valid_and_sourced("unsourced_gamma")


def test_the_conformance_check_refuses_a_range_a_run_cannot_take(extra_method):
    drw_start = CrossEntropyDRW.hyperparameters["drw_start"]

    class LateDRW(CrossEntropyDRW):
        """CE-DRW whose search could start re-weighting after a quick run's last epoch."""

        name = "late_drw"
        hyperparameters = {**CrossEntropyDRW.hyperparameters,
                           "drw_start": replace(drw_start, search=Search(0.5, 0.99, source="a test"))}

    extra_method(LateDRW)
    with pytest.raises(UserError, match="late_drw.drw_start=0.99 with epochs=12: re-weighting would start after"):
        check_search_space_is_valid_and_sourced("late_drw")


def test_list_prints_the_search_space(capsys):
    assert main(["list", "ldam_drw"]) == 0
    out = capsys.readouterr().out
    for text in ("Search space", "ldam_drw.max_margin", "ldam_drw.drw_start", "0.0316 .. 0.316", "0.5 .. 0.9",
                 "DomainBed hparams_registry.py", "0.1 .. 1"):
        assert text in out, text
    assert main(["list", "cb_focal"]) == 0
    out = capsys.readouterr().out
    assert "0.9, 0.99, 0.999, 0.9999" in out and "Cui et al. CVPR 2019" in out


def test_optuna_is_not_imported_to_list_a_space():
    code = ("import sys; from ltbench.sweep import resolve; from ltbench.search_space import search_space; "
            "search_space(resolve('focal', 'cifar10_lt', 100, 0, 'paper')); print('optuna' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
