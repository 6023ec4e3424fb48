"""Errors a user can act on: each says what was wrong, what is allowed and how to fix it."""

import difflib
import re


class UserError(Exception):
    """Bad input or environment; the CLI prints it without a traceback and exits 2."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        text = self.args[0]
        return f"{text}\n  hint: {self.hint}" if self.hint else text


def unknown_name(kind: str, name: str, known: list[str], candidates: list[str] | None = None) -> UserError:
    """`known` is what the hint lists; `candidates` (default: known) is where the closest match is looked for."""
    close = difflib.get_close_matches(name, candidates or known, n=1, cutoff=0.5)
    guess = f" Did you mean '{close[0]}'?" if close else ""
    return UserError(
        f"unknown {kind} '{name}'.{guess}",
        hint=f"known {plural(kind)}: {', '.join(sorted(known))} (see `ltbench list`)",
    )


def count_flag(flag: str, value, hint: str) -> int:
    """A flag that counts something (--jobs, --budget): a whole number of at least 1."""
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"{flag} {value!r} is not a whole number of at least 1", hint=hint)
    return int(text)


def plural(kind: str) -> str:
    """`kind` of many: its noun gets the s, not the words that qualify it ("datasets with data
    options", "config keys (in sweep.toml)")."""
    return re.sub(r"^(.*?)( \(| for | that | with | in |$)", r"\1s\2", kind, count=1)


class CorruptFile(Exception):
    """A file of the results store that cannot be read as what it should be (a result row, a
    spec, the Slurm submission record). The CLI reports it in one line and exits 2."""
