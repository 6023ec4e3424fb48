"""How the report names and orders methods and datasets: from the registries, so a plugin's
method or dataset is shown under its own display name. A name no longer registered (results
of an uninstalled plugin) is shown as it is, after the registered ones."""

from functools import lru_cache


@lru_cache(maxsize=1)
def _registered() -> tuple[dict, dict]:
    from ltbench import registry

    methods = {name: (i, cls.title()) for i, (name, cls) in enumerate(registry.methods().items())}
    datasets = {name: (i, info.title) for i, (name, info) in enumerate(registry.datasets().items())}
    return methods, datasets


def method_title(name: str) -> str:
    return _registered()[0].get(name, (None, name))[1]


def method_rank(name: str) -> tuple:
    methods = _registered()[0]
    return (methods[name][0] if name in methods else len(methods), name)


def dataset_title(name: str) -> str:
    return _registered()[1].get(name, (None, name))[1]


def dataset_rank(name: str) -> tuple:
    datasets = _registered()[1]
    return (datasets[name][0] if name in datasets else len(datasets), name)


def shot_rule(name: str) -> str:
    """The dataset's many/medium/few rule ("cb" for a dataset no longer registered)."""
    from ltbench import registry

    try:
        return registry.dataset(name).shot_rule
    except Exception:  # noqa: BLE001 - an uninstalled plugin's dataset
        return "cb"


def has_feature_branch(name: str) -> bool:
    """Whether a method trains a contrastive feature branch (its memory curve belongs in the report)."""
    from ltbench import registry

    cls = registry.methods().get(name)
    return cls is not None and callable(getattr(cls, "feature_loss", None))
