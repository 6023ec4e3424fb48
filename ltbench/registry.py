"""Names users type, mapped to methods, datasets and backbones.

Methods come from the `ltbench.methods` entry-point group (this package's own and any
installed third-party package's); datasets are a dict; backbones are timm's registry.
"""

from functools import lru_cache
from importlib.metadata import entry_points

from ltbench.data.datasets import DATASETS, DatasetInfo
from ltbench.data.image_datasets import IMAGE_DATASETS
from ltbench.errors import UserError, unknown_name
from ltbench.method import Method


@lru_cache(maxsize=1)
def methods() -> dict[str, type[Method]]:
    found = {}
    for ep in entry_points(group="ltbench.methods"):
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plugin must not hide the others
            raise UserError(f"method plugin '{ep.name}' ({ep.value}) failed to load: {exc}",
                            hint="fix or uninstall the package that provides it") from exc
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise UserError(f"method plugin '{ep.name}' ({ep.value}) is not an ltbench.method.Method subclass")
        found[ep.name] = cls
    return found


def method(name: str) -> type[Method]:
    known = methods()
    if name not in known:
        raise unknown_name("method", name, list(known))
    return known[name]


def datasets() -> dict[str, DatasetInfo]:
    """The constructed long-tailed datasets (CIFAR-LT, ...) and those published with their
    split (ImageNet-LT, Places-LT, iNaturalist 2018)."""
    return {**DATASETS, **IMAGE_DATASETS}


def dataset(name: str) -> DatasetInfo:
    known = datasets()
    if name not in known:
        raise unknown_name("dataset", name, list(known))
    return known[name]
