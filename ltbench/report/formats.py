"""How numbers, names and devices print in every table and figure: Unicode text that each
writer (render) escapes for its format."""

import pandas as pd

from .names import dataset_title, method_title

PM, MINUS, DAGGER = " \u00b1 ", "\u2212", "\u2020"
NO_GROUP = "\u2014"  # a shot group with no classes; a cell never run stays blank


def dataset_name(dataset: str) -> str:
    return dataset_title(dataset)


def shown_label(label: str) -> str:
    """A row label as tables print it: the method by its display name (LDAM-DRW for ldam_drw)."""
    method, space, settings = label.partition(" ")
    return method_title(method) + space + settings


def fmt_factor(factor) -> str:
    return "" if pd.isna(factor) else f"{factor:g}"


def fmt_number(value, digits=2) -> str:
    return "" if pd.isna(value) else f"{value:.{digits}f}".replace("-", MINUS)


def fmt_mean_std(mean, std, digits=2) -> str:
    """A single seed has no spread to show, so no +-."""
    if pd.isna(mean):
        return ""
    return fmt_number(mean, digits) + ("" if pd.isna(std) else PM + fmt_number(std, digits))


def fmt_signed(value) -> str:
    return "" if pd.isna(value) else f"{value:+.2f}".replace("-", MINUS)


def plural(n, word: str) -> str:
    """"1 class", "3 classes", "1 seed", "5 seeds"."""
    return f"{n:g} {word}" + ("" if n == 1 else "es" if word.endswith("s") else "s")


def fmt_device(device) -> str:
    """As `environment.device_label` records it, readable: `cuda:NVIDIA H100` -> the GPU
    model, `cpu:2 cores` -> `cpu (2 cores)`; older rows say only `cpu` or `cuda`."""
    device = "" if pd.isna(device) else str(device)
    kind, _, detail = device.partition(":")
    if kind == "cuda":
        return detail.strip() or "GPU"
    if kind == "cpu":
        return f"cpu ({detail.strip()})" if detail.strip() else "cpu"
    return device


def fmt_duration(seconds) -> str:
    if pd.isna(seconds):
        return ""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
