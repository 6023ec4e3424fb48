"""Results written by ltbench 0.1 (one flat `params` dict per spec) read as today's runs.

0.1 put execution settings (channels_last, compile, loader, amp, the removed fused kernel)
and the many/medium/few rule into the run id, and kept every method's hyperparameters in the
same namespace as the trainer's. `migrate_store` rewrites such a run folder as the run it is
now: its spec split by kind, renamed to its new run id, its result row's run id, preset
label, params and execution columns brought up to date. Its checkpoint, which named no run and
held numpy scalars, is read weights-only (numpy's data rebuilders allowed, nothing else),
made plain data and stamped with the run it belongs to; one that needs more stays as it is,
and the run refuses it. A 0.1 run that is the same experiment as one already in the store (it
differed only in an execution setting) is moved under `<results>/.superseded/`, never merged.

Migration never writes through a link: a run folder that is a symbolic link (to a folder
that may be anyone's, anywhere) is left as it is, with a message, and folders are moved under
`.superseded` only where it is a folder of the results dir itself.
"""

import csv
import json
import os
from pathlib import Path

from ltbench.results_dir import SPEC_FILE, is_legacy
from ltbench.results_schema import RESULT_COLUMNS
from ltbench.settings import EXECUTION, RETIRED, SETTINGS, SPEC_FIELDS, in_spec
from ltbench.spec import RunSpec
from ltbench.store import atomic_write_bytes, csv_bytes, make_dirs

SUPERSEDED = ".superseded"


def upgrade_spec(data: dict) -> RunSpec:
    """A 0.1 spec.json as today's RunSpec (labelled as `ltbench run` would label it now)."""
    from ltbench.sweep import preset_label, schemas_for

    params = dict(data["params"])
    for key in RETIRED:
        params.pop(key, None)
    hyperparameters = {}
    for owner, schema in schemas_for(data["method"], data["dataset"]).items():
        if owner == "trainer":
            continue
        hyperparameters[owner] = in_spec(schema, {k: params.pop(k) if k in params else s.value_before
                                                  for k, s in schema.items()})
    execution = {k: params.pop(k, s.default) for k, s in SETTINGS.items() if s.kind == EXECUTION}
    unknown = set(params) - set(SETTINGS)
    if unknown:
        raise ValueError(f"settings this version does not know: {', '.join(sorted(unknown))}")
    # settings added since 0.1 take the default 0.1 ran with
    protocol = {k: params.get(k, s.value_before) for k, s in SETTINGS.items()
                if s.kind != EXECUTION and k not in SPEC_FIELDS}
    spec = RunSpec(**{k: data[k] for k in ("method", "dataset", "imbalance_factor", "seed", "preset", *SPEC_FIELDS)},
                   params=protocol, hyperparameters=hyperparameters, execution=execution)
    return RunSpec(**{**spec.to_dict(), "preset": preset_label(spec)})


def pending_migrations(root) -> dict[str, str]:
    """{new run id: 0.1 folder name} of what `migrate_store` would move; writes nothing."""
    return {spec.run_id: old for old, spec in _legacy_specs(Path(root), log=lambda *_: None).items()}


def _legacy_specs(root: Path, log) -> dict[str, RunSpec]:
    upgraded = {}
    if not root.is_dir():
        return upgraded
    for folder in sorted(p for p in root.iterdir() if (p / SPEC_FILE).is_file()):
        try:
            data = json.loads((folder / SPEC_FILE).read_text())
        except (OSError, ValueError):
            continue  # the store reports an unreadable spec as a corrupt run
        if not is_legacy(data):
            continue
        if folder.is_symlink():
            log(f"{folder}: a run of an earlier ltbench in a folder that is a link (to {os.readlink(folder)}); "
                "not migrated, since that would write where the link points. Copy the folder into the results "
                "dir in place of the link to have it migrated")
            continue
        try:
            upgraded[folder.name] = upgrade_spec(data)
        except Exception as exc:  # a method whose plugin is gone, a setting renamed since: keep the folder
            log(f"{folder}: a run of an earlier ltbench that cannot be read as today's ({exc}); left as it is")
    return upgraded


def migrate_store(root, log=print) -> dict[str, str]:
    """Bring every 0.1 run folder under `root` up to date; returns {old run id: new run id}."""
    root = Path(root)
    upgraded = _legacy_specs(root, log)
    renamed = {old: spec.run_id for old, spec in upgraded.items()}
    for old, spec in upgraded.items():
        target = root / spec.run_id
        if (target.exists() or target.is_symlink()) and old != spec.run_id:
            # kept, out of the way: a second copy of one experiment would count its seed twice
            aside = root / SUPERSEDED / old
            if aside.parent.is_symlink() or (aside.parent.exists() and not aside.parent.is_dir()):
                log(f"{root / old}: the same experiment as {target}; left where it is, since {aside.parent} is "
                    "not a folder of the results dir (a link or a file). Remove it to have such runs set aside")
                continue
            make_dirs(aside.parent)
            os.rename(root / old, aside)
            log(f"{root / old}: the same experiment as {target} (it differed only in how it ran); moved to {aside}")
            continue
        # renamed first: a migration killed in between leaves a 0.1 spec under its new run id,
        # which the next one rewrites in place
        if old != spec.run_id:
            os.rename(root / old, target)
        _rewrite(target, spec, renamed, log)
    return renamed


def _rewrite(folder: Path, spec: RunSpec, renamed: dict[str, str], log=print) -> None:
    result = folder / "result.csv"
    if result.exists():
        with open(result, newline="") as fh:
            rows = list(csv.DictReader(fh))
        if len(rows) == 1:
            row = rows[0]
            row.update(run_id=spec.run_id, preset=spec.preset, params=json.dumps(spec.flat_params(), sort_keys=True),
                       execution=json.dumps(spec.execution, sort_keys=True))
            if row.get("stage1_run_id"):
                row["stage1_run_id"] = renamed.get(row["stage1_run_id"], row["stage1_run_id"])
            atomic_write_bytes(result, csv_bytes(RESULT_COLUMNS, [row]))
    if (folder / "checkpoint.pt").exists():
        from ltbench.checkpoints import upgrade_legacy_checkpoint  # torch, only where there is one

        upgraded = upgrade_legacy_checkpoint(folder / "checkpoint.pt", spec, log)
        if upgraded is not None:
            atomic_write_bytes(folder / "checkpoint.pt", upgraded)
    atomic_write_bytes(folder / SPEC_FILE, json.dumps(spec.to_dict(), indent=2).encode())
