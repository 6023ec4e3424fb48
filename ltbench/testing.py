"""Checks every registered method passes, built-in or a plugin's: a method is tested the
moment it is registered.

A plugin author runs them on their own method with pytest::

    from ltbench.testing import parametrize_with_checks

    @parametrize_with_checks(["my_method"])
    def test_conformance(method, check):
        check(method)

Each check takes a registered method's name and raises AssertionError (or the UserError
the method raised) when the method breaks the plugin contract, or skips (pytest.skip, with
the reason) where it does not apply to the method: a check that passed has checked something.
The checks train on a tiny generated long-tailed set on the CPU, in seconds.
"""

import io
import math

import numpy as np
import torch

from ltbench import registry
from ltbench.data.datasets import LongTailData
from ltbench.settings import Setting, Stage2Plan
from ltbench.spec import RunSpec

TOY_COUNTS = [24, 12, 6, 4, 2]  # a long tail over five classes
TOY_TEST_PER_CLASS = 4
TOY_SIDE = 16
# a smoke-sized protocol on any registered CIFAR-family dataset's defaults
TOY_SETTINGS = {"backbone": "resnet8_cifar", "epochs": "2", "batch_size": "8", "warmup_epochs": "0",
                "eval_every": "1", "n_max": "24"}


def toy_data(seed: int = 0) -> LongTailData:
    """Images whose class is their mean brightness per channel, so a step can learn something."""
    rng = np.random.default_rng(seed)

    def images(counts):
        labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)]).astype(np.int64)
        base = (labels[:, None, None, None] * 40 + 30).astype(np.float64)
        noise = rng.normal(0, 20, size=(len(labels), 3, TOY_SIDE, TOY_SIDE))
        return np.clip(base + noise, 0, 255).astype(np.uint8), labels

    train_x, train_y = images(TOY_COUNTS)
    test_x, test_y = images([TOY_TEST_PER_CLASS] * len(TOY_COUNTS))
    return LongTailData("toy", train_x, train_y, test_x, test_y, list(TOY_COUNTS), (0.5,) * 3, (0.25,) * 3)


def toy_spec(name: str, **overrides) -> RunSpec:
    from ltbench.sweep import resolve

    return resolve(name, "cifar10_lt", 100, 0, "smoke", {**TOY_SETTINGS, **overrides})


def toy_trainer(spec: RunSpec, data: LongTailData, params: dict | None = None, **options):
    """A CPU trainer of `spec` on `data`; a two-stage method's stage 1 and a distilling method's
    teacher are trained first, for one epoch."""
    from ltbench.runner import make_trainer
    from ltbench.stages import FinishedRun, stage1_spec
    from ltbench.teacher import teacher_spec

    def one_epoch(first):
        if first is None:
            return None
        first = RunSpec(**{**first.to_dict(), "epochs": 1})
        states = []
        make_trainer(first, data, torch.device("cpu"), save_checkpoint=states.append).fit()
        return FinishedRun(first, reused=True, result={}, state=states[-1])

    return make_trainer(spec, data, torch.device("cpu"), params=params, stage1=one_epoch(stage1_spec(spec)),
                        distils_from=one_epoch(teacher_spec(spec)), **options)


# ---------------------------------------------------------------------- the checks


def check_defaults_resolve(name: str) -> None:
    """The paper defaults pass every check on every preset and on both CIFAR-LT datasets."""
    from ltbench.presets import PRESETS
    from ltbench.sweep import resolve

    cls = registry.method(name)
    assert cls.name == name and cls.summary, f"{name}: needs a `name` and a docstring (its first line is the summary)"
    for dataset in ("cifar10_lt", "cifar100_lt"):
        for preset in PRESETS:
            spec = resolve(name, dataset, 100, 0, preset)
            assert spec.preset == preset, f"{name}: the plain {preset} spec is labelled {spec.preset}"
            assert set(spec.hyperparameters) == {c.name for c in cls.chain()}
    for key, setting in cls.settings(registry.dataset("cifar10_lt")).items():
        assert isinstance(setting, Setting)
        setting.check(f"{name}.{key}", setting.default)


def check_defaults_cite_a_source(name: str) -> None:
    """Every default a method's paper protocol gives says where it comes from (paper section,
    original file and line), as `ltbench list METHOD` prints it: each hyperparameter's Setting
    has a `source` on every dataset of the protocol card, and each of `trainer_defaults` has
    its entry in `trainer_sources`."""
    from ltbench.card import card_datasets

    cls = registry.method(name)
    unsourced = sorted(set(cls.trainer_defaults) - set(cls.trainer_sources))
    assert not unsourced, f"{name}: trainer_defaults without a trainer_sources entry: {unsourced}"
    for dataset in card_datasets():
        unsourced = [k for k, s in cls.settings(registry.dataset(dataset)).items() if not s.source]
        assert not unsourced, f"{name} on {dataset}: no source for {unsourced} (give each Setting a source=)"


def check_search_space_is_valid_and_sourced(name: str) -> None:
    """Every setting a search draws (the trainer's lr and weight decay, each `Setting(search=...)`
    of the method's chain) says what motivates its range, and on every dataset of the protocol
    card, under the presets a study runs (paper, quick), the range lies inside what the setting
    allows around the run's value and each end (or choice) resolves to a run that has it."""
    from ltbench.card import card_datasets, card_spec
    from ltbench.search_space import search_space, setting_value
    from ltbench.sweep import resolve

    for dataset in card_datasets():
        for preset in ("paper", "quick"):
            spec = card_spec(name, dataset, preset)
            space = search_space(spec)  # a UserError where a range leaves what its setting allows
            assert {"lr", "weight_decay"} <= {d.name for d in space}, f"{name}: the trainer's searched settings"
            for d in space:
                assert d.search.source, f"{name}: no source for the search range of {d.name} (give Search a source=)"
                ends = d.search.choices or [int(end) if d.draws_ints else end for end in (d.search.low, d.search.high)]
                for value in ends:
                    drawn = resolve(name, dataset, spec.imbalance_factor, 0, preset, {(d.owner, d.key): value})
                    assert setting_value(drawn, d.owner, d.key) == value, f"{name} on {dataset}: {d.name}={value}"


def check_every_default_is_settable(name: str) -> None:
    """Each hyperparameter set to its own default leaves the run as it is; set to another
    allowed value it makes another, custom run."""
    from ltbench.settings import show_value

    plain = toy_spec(name)
    for key, setting in registry.method(name).settings(registry.dataset("cifar10_lt")).items():
        same = toy_spec(name, **{f"{name}.{key}": show_value(setting.default)})
        assert same.run_id == plain.run_id and same.preset == plain.preset, f"{name}.{key}: its default as --set"
        other = _another_value(setting)
        if other is None:
            continue
        changed = toy_spec(name, **{f"{name}.{key}": show_value(other)})
        assert changed.own_hyperparameters[key] == other and changed.run_id != plain.run_id, f"{name}.{key}"
        assert changed.preset == "custom", f"{name}.{key}: another value must label the run custom"


def check_one_step_is_finite(name: str) -> None:
    """One training step in fp32 and under bf16 autocast gives a finite loss and finite gradients,
    and moves at least one parameter."""
    data = toy_data()
    for cpu_amp in (False, True):
        spec = toy_spec(name, cpu_amp=str(cpu_amp).lower())
        trainer = toy_trainer(spec, data)
        if trainer.epochs == 0:
            _does_not_apply(POST_HOC)
        trainable = [p for p in trainer.optimizer.param_groups[0]["params"] if p.requires_grad]
        before = [p.detach().clone() for p in trainable]
        grads = []
        trainer.step_hook = lambda *_: grads.append([p.grad for p in trainable])
        loss = _one_step(trainer)
        assert math.isfinite(loss), f"{name}: loss {loss} (cpu_amp={cpu_amp})"
        assert all(g is None or torch.isfinite(g).all() for g in grads[0]), f"{name}: non-finite gradient"
        assert any(not torch.equal(a, p) for a, p in zip(before, trainable)), f"{name}: the step changed nothing"


def check_logits_shape(name: str) -> None:
    """Logits are (N, C) for N images of a C-class dataset."""
    data = toy_data()
    trainer = toy_trainer(toy_spec(name), data)
    trainer.backbone.eval()
    trainer.method.eval()
    with torch.no_grad():
        images = torch.randn(7, 3, TOY_SIDE, TOY_SIDE)
        logits = trainer.method.logits(trainer.backbone(images))
    assert tuple(logits.shape) == (7, len(TOY_COUNTS)), f"{name}: logits {tuple(logits.shape)}"


def check_state_dict_round_trips(name: str) -> None:
    """A method's state_dict loads into a fresh instance, which then gives the same logits."""
    data = toy_data()
    trainer = toy_trainer(toy_spec(name), data)
    if trainer.epochs:
        _one_step(trainer)
    fresh = toy_trainer(toy_spec(name), data)
    fresh.method.load_state_dict(_through_bytes(trainer.method.state_dict()))
    for module in (trainer.method, fresh.method, trainer.backbone):
        module.eval()
    with torch.no_grad():
        # the backbone's features, whatever their shape (one vector per expert, say)
        features = trainer.backbone(torch.randn(5, 3, TOY_SIDE, TOY_SIDE))
        assert torch.allclose(trainer.method.logits(features), fresh.method.logits(features)), name


def check_two_stage_declarations(name: str) -> None:
    """A two-stage method names a registered stage 1 and says how stage 2 trains."""
    cls = registry.method(name)
    if cls.stage1 is None:
        _does_not_apply("a one-stage method: no stage 1 or stage 2 to declare")
    assert registry.method(cls.stage1.name) is cls.stage1, f"{name}: stage 1 '{cls.stage1.name}' is not registered"
    trainer = toy_trainer(toy_spec(name), toy_data())
    plan = trainer.method.stage2()  # a Stage2Plan checks its own fields and settings when made
    assert isinstance(plan, Stage2Plan), f"{name}: stage2() must return a Stage2Plan, not {type(plan).__name__}"
    assert (trainer.epochs, trainer.batch_size, trainer.lr_step_first) == (
        plan.epochs, plan.batch_size, plan.lr_step_first), f"{name}: stage 2 does not train as its plan says"


def check_resume_gives_the_uninterrupted_result(name: str) -> None:
    """Stopped after its first epoch and resumed from that checkpoint (through bytes, as read
    from disk), a run ends with the weights and test counts of the run that was never stopped."""
    data = toy_data()
    spec = toy_spec(name)
    saved = []
    whole = toy_trainer(spec, data, save_checkpoint=lambda state: saved.append(_through_bytes(state)))
    if whole.epochs == 0:
        _does_not_apply(POST_HOC)
    uninterrupted = whole.fit()
    assert saved, f"{name}: trained {whole.epochs} epochs without a checkpoint to resume from"
    resumed = toy_trainer(spec, data)
    resumed.load_state_dict(saved[0])
    outcome = resumed.fit()
    assert np.array_equal(outcome.final.correct, uninterrupted.final.correct), f"{name}: other test counts"
    for (key, a), b in zip(whole.method.state_dict().items(), resumed.method.state_dict().values()):
        assert torch.equal(a, b), f"{name}: {key} differs after resuming"


CHECKS = [check_defaults_resolve, check_defaults_cite_a_source, check_search_space_is_valid_and_sourced,
          check_every_default_is_settable,
          check_one_step_is_finite, check_logits_shape, check_state_dict_round_trips,
          check_two_stage_declarations, check_resume_gives_the_uninterrupted_result]


def parametrize_with_checks(names: list[str] | None = None):
    """pytest parametrisation over (method name, check) for the given methods (default: every
    registered one)."""
    import pytest

    names = list(registry.methods()) if names is None else names
    cases = [pytest.param(name, check, id=f"{name}-{check.__name__}") for name in names for check in CHECKS]
    return pytest.mark.parametrize("method, check", cases)


# ---------------------------------------------------------------------- helpers

POST_HOC = "post-hoc: the method trains no epoch, it changes how its trained stage 1 predicts"


def _does_not_apply(reason: str):
    """Skip the running check: counted as passed, it would claim what it never checked."""
    import pytest

    pytest.skip(reason)


def two_stage_methods() -> dict[str, str]:
    """Every registered two-stage method, with the name of the method its stage 1 trains."""
    return {name: cls.stage1.name for name, cls in registry.methods().items() if cls.stage1 is not None}


def _one_step(trainer) -> float:
    from ltbench.method import Progress

    batches = next(iter(trainer.loader.epoch()))
    for group in trainer.optimizer.param_groups:
        group["lr"] = trainer.params["lr"]
    trainer.backbone.train()
    trainer.method.train()
    loss = trainer.train_step(batches, Progress(0, trainer.epochs, 0, trainer.loader.steps_per_epoch))
    if trainer.step_hook is not None:
        trainer.step_hook(0, 0, loss)
    return float(loss)


def _through_bytes(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, map_location="cpu", weights_only=True)


def _another_value(setting: Setting):
    """An allowed value other than the default, where one is easy to name."""
    default = setting.default
    if setting.choices is not None:
        return next((c for c in setting.choices if c != default), None)
    if isinstance(default, bool):
        return not default
    if isinstance(default, list):
        return default[:1] if len(default) > 1 else None
    if isinstance(default, (int, float)):
        for candidate in (default / 2 if isinstance(default, float) else default + 1, default * 2, default + 1):
            candidate = type(default)(candidate)
            try:
                setting.check("", candidate)
            except Exception:  # noqa: BLE001 - out of this setting's range: try the next
                continue
            if candidate != default:
                return candidate
    return None
