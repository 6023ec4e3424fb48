"""What an equal-budget search of a method draws: every setting of a run's schema that declares a
`Search` (ltbench.settings): the trainer's learning rate and weight decay, which every method
shares, and the method's own (its stage 1's too, for a two-stage method), each as an absolute
range around the run's own value.

Optuna draws them: `suggest` asks an `optuna.trial.Trial` (or anything with its suggest_*
methods) for one value of each, and `distributions` gives them as Optuna distributions for
`study.ask(...)`. Optuna is imported only there, so listing a space costs no import of it.
Studies run on the paper or quick preset: a smoke run's 2 epochs leave ranges such as
drw_start's no room (re-weighting would start after the last epoch).
"""

from dataclasses import dataclass

from ltbench.settings import SPEC_FIELDS, Search, Setting
from ltbench.spec import RunSpec
from ltbench.sweep import TRAINER, schemas_for


@dataclass(frozen=True)
class Dimension:
    """One searched setting of a run: its owner (TRAINER, or the method of the chain whose
    hyperparameter it is), its name there, its declaration and its absolute range."""

    owner: str
    key: str
    setting: Setting
    search: Search  # absolute: a relative declaration already centred on the run's value

    @property
    def name(self) -> str:
        """The setting as `--set` and the protocol card write it (lr, ldam_drw.max_margin)."""
        return self.key if self.owner == TRAINER else f"{self.owner}.{self.key}"

    @property
    def draws_ints(self) -> bool:
        return self.search.choices is None and self.setting.value_type is int

    @property
    def scale(self) -> str:
        return f"int, {self.search.scale}" if self.draws_ints else self.search.scale

    def describe(self) -> str:
        if self.search.choices is not None:
            return ", ".join(map(str, self.search.choices))
        return f"{self.search.low:.3g} .. {self.search.high:.3g}"

    def suggest(self, trial):
        """One value from `trial` (Optuna's suggest_* API), named as `name`."""
        search = self.search
        if search.choices is not None:
            return trial.suggest_categorical(self.name, list(search.choices))
        if self.draws_ints:
            return trial.suggest_int(self.name, int(search.low), int(search.high), log=search.log)
        return trial.suggest_float(self.name, search.low, search.high, log=search.log)

    def distribution(self):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        search = self.search
        if search.choices is not None:
            return CategoricalDistribution(search.choices)
        if self.draws_ints:
            return IntDistribution(int(search.low), int(search.high), log=search.log)
        return FloatDistribution(search.low, search.high, log=search.log)


def setting_value(spec: RunSpec, owner: str, key: str):
    """The value of setting `key` of `owner` (TRAINER or a method of the chain) in `spec`."""
    if owner != TRAINER:
        return spec.hyperparameters[owner][key]
    if key in SPEC_FIELDS:
        return getattr(spec, key)
    return spec.params[key] if key in spec.params else spec.execution[key]


def search_space(spec: RunSpec) -> list[Dimension]:
    """The settings a search of `spec`'s method draws on `spec`'s dataset, trainer first, then
    each method of its chain (stage 1 first), with ranges around `spec`'s values; a UserError
    where a range would leave what its setting allows (a --set value far from the paper's)."""
    space = []
    for owner, schema in schemas_for(spec.method, spec.dataset).items():
        for key, setting in schema.items():
            if setting.search is None:
                continue
            name = key if owner == TRAINER else f"{owner}.{key}"
            space.append(Dimension(owner, key, setting, setting.searched(name, setting_value(spec, owner, key))))
    return space


def suggest(space: list[Dimension], trial) -> dict:
    """One draw of every setting of `space` from an Optuna trial, as the overrides
    ltbench.sweep.resolve takes: {(owner, key): value}."""
    return {(d.owner, d.key): d.suggest(trial) for d in space}


def distributions(space: list[Dimension]) -> dict:
    """{name: Optuna distribution}, for `study.ask(distributions)` and `study.enqueue_trial`."""
    return {d.name: d.distribution() for d in space}

