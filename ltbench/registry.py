"""Names users type, mapped to methods and datasets (backbones are timm's registry).

Built-in methods are the modules of `ltbench_methods` (the methods/ folder): a new file there
is found without reinstalling. Built-in datasets are ltbench.data's catalogue. An installed
package adds either through an entry-point group, `ltbench.methods` or `ltbench.datasets`,
naming a Method subclass or a DatasetInfo.

The order of each registry is the order tables list them in: the built-in methods in
`ltbench_methods.ORDER` (the rest of the folder after them, by name), then plugins by name.
"""

import importlib
import inspect
import pkgutil
from functools import lru_cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from ltbench.data.datasets import DATASETS, DatasetInfo
from ltbench.data.image_datasets import IMAGE_DATASETS
from ltbench.data.profiles import SHOT_RULES
from ltbench.errors import UserError, unknown_name

if TYPE_CHECKING:  # torch: the datasets' registry is read without it (`ltbench report`, `fetch-data`'s help)
    from ltbench.method import Method

METHOD_GROUP, DATASET_GROUP = "ltbench.methods", "ltbench.datasets"


@lru_cache(maxsize=1)
def methods() -> dict[str, type["Method"]]:
    from ltbench.method import Method

    found = _builtin_methods()
    for name, cls in sorted(_plugins(METHOD_GROUP).items()):
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise UserError(f"method plugin '{name}' is not an ltbench.method.Method subclass",
                            hint="an ltbench.methods entry point names the class, e.g. my_pkg.module:MyMethod")
        if name in found and found[name] is not cls:
            raise UserError(f"method plugin '{name}' has the name of a built-in method",
                            hint="rename it in the plugin's entry point and class")
        found[name] = cls
    for name, cls in found.items():
        if getattr(cls, "name", None) != name:
            raise UserError(f"method '{name}' is registered under another name than its class's "
                            f"({getattr(cls, 'name', None)!r})", hint="make the entry point's name and `name` agree")
    return found


def _builtin_methods() -> dict[str, type["Method"]]:
    import ltbench_methods

    from ltbench.method import Method

    found = {}
    for module_info in sorted(pkgutil.iter_modules(ltbench_methods.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"ltbench_methods.{module_info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            # a registered method is a Method defined in this module with a name of its own
            if issubclass(cls, Method) and cls.__module__ == module.__name__ and "name" in vars(cls):
                found[cls.name] = cls
    order = {name: i for i, name in enumerate(getattr(ltbench_methods, "ORDER", []))}
    return dict(sorted(found.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


def _plugins(group: str) -> dict:
    loaded = {}
    for ep in entry_points(group=group):
        try:
            loaded[ep.name] = ep.load()
        except Exception as exc:  # a broken plugin must not hide behind a traceback
            raise UserError(f"plugin '{ep.name}' ({ep.value}, group {group}) failed to load: {exc}",
                            hint="fix or uninstall the package that provides it") from exc
    return loaded


def method(name: str) -> type["Method"]:
    known = methods()
    if name not in known:
        raise unknown_name("method", name, list(known))
    return known[name]


@lru_cache(maxsize=1)
def datasets() -> dict[str, DatasetInfo]:
    """The constructed long-tailed datasets (CIFAR-LT, ...), those published with their split
    (ImageNet-LT, Places-LT, iNaturalist 2018), then installed plugins."""
    found = {**DATASETS, **IMAGE_DATASETS}
    for name, info in sorted(_plugins(DATASET_GROUP).items()):
        if not isinstance(info, DatasetInfo):
            raise UserError(f"dataset plugin '{name}' is not an ltbench.data.datasets.DatasetInfo",
                            hint="an ltbench.datasets entry point names a DatasetInfo object, e.g. my_pkg.data:MY_LT")
        if info.name != name or name in DATASETS or name in IMAGE_DATASETS:
            raise UserError(f"dataset plugin '{name}' must be registered under its own, new name (its "
                            f"DatasetInfo says {info.name!r})")
        if info.shot_rule not in SHOT_RULES:
            raise UserError(f"dataset plugin '{name}': unknown shot_rule '{info.shot_rule}'",
                            hint=f"use one of: {', '.join(SHOT_RULES)}")
        found[name] = info
    return found


def dataset(name: str) -> DatasetInfo:
    known = datasets()
    if name not in known:
        raise unknown_name("dataset", name, list(known))
    return known[name]


def clear() -> None:
    """Forget what was found (tests that install a plugin on the fly)."""
    methods.cache_clear()
    datasets.cache_clear()
