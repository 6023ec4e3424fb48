"""A method's protocol card: every setting a paper-protocol run of it resolves to on each
dataset family, and where each value comes from, so a reader can audit a method without
reading its code (`ltbench list METHOD`).

Nothing here is a second copy of a value or of a source: values come from `ltbench.sweep.resolve`,
sources from where the values are declared (`Setting.source`, a method's `trainer_sources`, a
dataset's `protocol_source`), and which of those applies follows resolve's order.
"""

from dataclasses import dataclass

from ltbench import registry
from ltbench.presets import preset_values, protocol_base
from ltbench.search_space import search_space, setting_value
from ltbench.settings import EXECUTION, SETTINGS, show_value
from ltbench.sweep import TRAINER, resolve

# one dataset of each family the papers report on: CIFAR-LT (10 and 100 classes, where
# per-dataset defaults differ), ImageNet-LT, iNaturalist; and Fashion-MNIST-LT, the one a
# machine without downloads runs
CARD_DATASETS = ("fashion_mnist_lt", "cifar10_lt", "cifar100_lt", "imagenet_lt", "inat2018")
UNSOURCED = "no source given"
EXECUTION_SOURCE = "execution setting: how the run is computed, not part of the protocol"
SCALED_LR_SOURCE = ("the protocol's lr scaled linearly to the {preset} preset's batch size (Goyal et al. 2017; "
                    "ltbench.sweep.resolve)")


def preset_source(preset: str) -> str:
    return f"ltbench's {preset} preset (ltbench.presets)"


@dataclass(frozen=True)
class CardRow:
    owner: str  # "trainer", or the method of the chain (the method, its stage 1) that owns the setting
    name: str
    kind: str  # protocol or execution; in the search space, the scale the search draws on
    values: dict  # dataset name -> the value, as `--set` would write it
    sources: dict  # dataset name -> where that value comes from

    def source_text(self, titles: dict) -> str:
        """One source where every dataset shares it; else each with the datasets it holds for."""
        groups: dict[str, list[str]] = {}
        for dataset, source in self.sources.items():
            groups.setdefault(source, []).append(titles[dataset])
        if len(groups) == 1:
            return next(iter(groups))
        return "; ".join(f"{', '.join(names)}: {source}" for source, names in groups.items())


def card_datasets() -> list[str]:
    registered = registry.datasets()
    return [name for name in CARD_DATASETS if name in registered] or list(registered)


def protocol_card(method: str, datasets: list[str] | None = None, preset: str = "paper") -> list[CardRow]:
    """Every trainer setting, then every setting of each method of `method`'s chain (stage 1
    first), as a run of `method` under `preset` resolves them on each of `datasets`."""
    cls = registry.method(method)
    names = list(datasets or card_datasets())
    infos = {d: registry.dataset(d) for d in names}
    specs = {d: card_spec(method, d, preset) for d in names}
    rows = []
    for key, setting in SETTINGS.items():
        values = {d: show_value(setting_value(spec, TRAINER, key)) for d, spec in specs.items()}
        sources = {d: trainer_source(cls, info, key, preset) for d, info in infos.items()}
        rows.append(CardRow(TRAINER, key, setting.kind, values, sources))
    for owner in cls.chain():
        schemas = {d: owner.settings(info) for d, info in infos.items()}
        for key, setting in schemas[names[0]].items():
            # a setting at its default may be kept out of the spec (Setting.omit_at_default)
            values = {d: show_value(spec.hyperparameters[owner.name].get(key, schemas[d][key].default))
                      for d, spec in specs.items()}
            sources = {d: schemas[d][key].source or UNSOURCED for d in names}
            rows.append(CardRow(owner.name, key, setting.kind, values, sources))
    return rows


def trainer_source(cls, dataset, key: str, preset_name: str = "paper") -> str:
    """Where the value of trainer setting `key` of a run under `preset_name` comes from, in
    ltbench.sweep.resolve's order: the preset (or the linear lr scaling to its batch size),
    else the method's (or its stage 1's) paper values, else the dataset's protocol, else the
    setting's own default."""
    setting = SETTINGS[key]
    if setting.kind == EXECUTION:
        return EXECUTION_SOURCE
    base = protocol_base(cls, dataset)
    preset = preset_values(preset_name, dataset, base)
    if key == "lr" and {**base, **preset}["batch_size"] != base["batch_size"]:
        return SCALED_LR_SOURCE.format(preset=preset_name)
    if key in preset and preset[key] != setting.default:
        return preset_source(preset_name)
    if key not in preset:
        for owner in reversed(cls.chain()):
            source = owner.trainer_source(key, dataset)
            if source is not None:
                return source
        if key in dataset.protocol:
            return dataset.protocol_source or f"{dataset.name}'s protocol: {UNSOURCED}"
    return setting.source or UNSOURCED


def card_spec(method: str, dataset: str, preset: str = "paper"):
    """The run of `method` on `dataset` the card describes: seed 0, and a constructed dataset's
    usual imbalance factor, 100 (the card's values do not depend on either)."""
    return resolve(method, dataset, registry.dataset(dataset).fixed_imbalance_factor or 100.0, 0, preset)


def search_card(method: str, datasets: list[str] | None = None, preset: str = "paper") -> list[CardRow]:
    """The search space of `method` (ltbench.search_space): each searched setting, its scale,
    the range it is drawn from on each of `datasets` under `preset`, and what motivates it."""
    names = list(datasets or card_datasets())
    spaces = {d: {(dim.owner, dim.key): dim for dim in search_space(card_spec(method, d, preset))} for d in names}
    rows = []
    for (owner, key), first in spaces[names[0]].items():
        dims = {d: space[owner, key] for d, space in spaces.items()}
        rows.append(CardRow(owner, key, first.scale, {d: dim.describe() for d, dim in dims.items()},
                            {d: dim.search.source or UNSOURCED for d, dim in dims.items()}))
    return rows


def card_notes(method: str, datasets: list[str] | None = None, preset: str = "paper") -> list[str]:
    """What a reader of the card must know besides the values: the datasets on which the
    method's paper protocol is not confirmed, whose runs are labelled custom."""
    if preset != "paper":
        return []
    notes = []
    for owner in registry.method(method).chain():
        for name in datasets or card_datasets():
            if name in owner.unconfirmed_protocol:
                notes.append(f"{registry.dataset(name).title}: {owner.unconfirmed_protocol[name]}.")
    return notes
