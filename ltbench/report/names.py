"""How the report names and orders methods and datasets, without importing a method (and so
torch): a method is shown under the display name its runs recorded (`method_title` in the
result row), a dataset under the datasets' registry's. A name with nothing recorded (runs of
an older ltbench) or no longer registered (an uninstalled plugin) is shown as it is, after
the others."""

from functools import lru_cache

# method -> display name, as the loaded runs recorded it (ltbench.report.load fills it)
_recorded_titles: dict[str, str] = {}


def remember_titles(titles: dict[str, str]) -> None:
    _recorded_titles.update({name: title for name, title in titles.items() if title})


@lru_cache(maxsize=1)
def _registered() -> dict:
    from ltbench import registry

    return {name: (i, info) for i, (name, info) in enumerate(registry.datasets().items())}


@lru_cache(maxsize=1)
def _method_order() -> dict[str, int]:
    import ltbench_methods

    return {name: i for i, name in enumerate(getattr(ltbench_methods, "ORDER", []))}


def method_title(name: str) -> str:
    return _recorded_titles.get(name, name)


def method_rank(name: str) -> tuple:
    """The built-in methods in the registry's order, then the rest by name."""
    order = _method_order()
    return (order.get(name, len(order)), name)


def is_registered_dataset(name: str) -> bool:
    return name in _registered()


def dataset_title(name: str) -> str:
    return _registered()[name][1].title if name in _registered() else name


def dataset_rank(name: str) -> tuple:
    datasets = _registered()
    return (datasets[name][0] if name in datasets else len(datasets), name)


def shot_rule(name: str) -> str:
    """The dataset's many/medium/few rule ("cb" for a dataset no longer registered)."""
    return _registered()[name][1].shot_rule if name in _registered() else "cb"


def has_feature_branch(name: str) -> bool:
    """Whether the method is one whose contrastive feature loss `ltbench bench --memory`
    measures (its memory curve belongs in the report)."""
    from ltbench.bench import FEATURE_LOSSES

    return name in FEATURE_LOSSES.values()
