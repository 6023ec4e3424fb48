"""The terminal ltbench prints to, and how it prints an accuracy: one definition, so `ltbench
status`, `show` and the run tables show a figure alike. Imports rich only."""

from rich.console import Console

# Wide enough for the results table when output goes to a file or CI log (rich's default
# there is 80 columns).
console = Console(width=None if Console().is_terminal else 140)


def wide() -> Console:
    """A log or a pipe has no edge to fit a table to: keep each entry on one line there."""
    return console if console.is_terminal else Console(width=200)


def number(value, digits: int) -> str:
    """A figure of a table, `digits` decimals ("—" where there is none: an empty shot group,
    an epoch without evaluation); text that is not a number is shown as it is."""
    if value in (None, ""):
        return "—"
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def accuracy(value) -> str:
    """A percentage as every table shows it: two decimals."""
    return number(value, 2)
