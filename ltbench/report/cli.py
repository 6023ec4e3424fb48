"""`ltbench report`: its arguments, and the one entry point the core CLI calls.

pandas, matplotlib and seaborn are imported inside `run`, so that adding these arguments
to the parser costs the other subcommands nothing.
"""

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ltbench.cli import ListArgument

    parser.add_argument("--results-dir", default="results", metavar="DIR",
                        help="directory of run folders to read (default: results)")
    parser.add_argument("--out", default="reports", metavar="DIR",
                        help="where tables, figures and index.html go (default: reports)")
    parser.add_argument("--methods", action=ListArgument, metavar="NAME",
                        help="only these methods (space or comma separated)")
    parser.add_argument("--dataset", "--datasets", dest="datasets", action=ListArgument, metavar="NAME",
                        help="only these datasets, e.g. cifar10_lt")
    # ltbench.data.profiles.SHOT_RULES, spelt out so that building the parser imports no numpy
    parser.add_argument("--shot-rule", choices=["cb", "oltr", "terciles"], default=None,
                        help="many/medium/few groups, recomputed from per_class.csv: cb (n > 100, n < 20; "
                             "classifier-balancing), oltr (n >= 100, n <= 20) or terciles (classes "
                             "sorted by count, split in thirds; never an empty group); default: each "
                             "dataset's own")
    parser.add_argument("--if", dest="imbalance_factors", action=ListArgument,
                        metavar="IF", help="only these imbalance factors, e.g. 100,10")
    parser.add_argument("--tag", metavar="NAME",
                        help="only runs trained under this experiment tag (`ltbench run --tag`); a run reused "
                             "from an earlier sweep keeps the tag it was trained under")
    parser.add_argument("--baseline", metavar="NAME",
                        help="the method (or row) every other is compared with, paired by seed "
                             "(default: ce where it ran; 'none' for no comparison)")
    parser.add_argument("--group-by", action=ListArgument, metavar="KEY",
                        help="settings that split a method into separate rows, e.g. "
                             "--group-by temperature gives 'psc_hybrid (temperature=0.1)'; "
                             "any params key, or epochs, batch_size, backbone, profile, preset")


def run(args) -> int:
    """Build the report; 0 on success, 2 when no finished run matches."""
    from datetime import datetime
    from pathlib import Path

    from rich.console import Console
    from rich.markup import escape

    from .. import __version__
    from . import calibration as calibration_, comparison, cost, curves, plots, render, significance, tables
    from .aggregate import aggregate
    from .formats import plural
    from .labels import filter_left_out, filter_runs, label_runs
    from .left_out import left_out_section, left_out_summary
    from .load import load_results
    from .provenance import Provenance
    from .reference import load_published
    from .shots import regroup

    # Soft wrap: messages carry paths that must stay whole to be copied.
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = max(console.width, 200)  # a log has no edge to fit the table to
    results_dir = Path(args.results_dir)
    out = Path(args.out)
    methods, datasets = _split(args.methods), _split(args.datasets)
    group_by = _split(args.group_by)
    try:
        factors = [float(f) for f in _split(args.imbalance_factors)]
    except ValueError as error:
        console.print(f"[red]--if takes numbers, e.g. --if 100,10: {escape(str(error))}[/]")
        return 2
    if not results_dir.is_dir():
        console.print(f"[red]No results directory '{escape(str(results_dir))}'.[/] Run "
                      "`ltbench run` first, or point --results-dir at the folder that holds "
                      "the run folders.")
        return 2

    results = load_results(results_dir)
    if args.tag is not None:
        from ltbench.tag import check_tag
        tag = check_tag(args.tag)
        present = sorted(t for t in results.runs["tag"].unique() if t)
        if tag not in present:
            console.print(f"No finished run in '{results_dir}' has the tag {tag!r}. Tags present: "
                          f"{', '.join(present) or 'none'}.", style="red", markup=False)
            return 2
        results.runs = results.runs[results.runs["tag"] == tag]
    runs = filter_runs(regroup(results.runs, results.per_class, args.shot_rule), methods, datasets, factors)
    left_out = filter_left_out(results.left_out, methods, datasets, factors)
    filters = _describe_filters(methods, datasets, factors, group_by, args.tag)
    if not len(runs):
        _explain_nothing(console, results.runs, results_dir, filters, left_out)
        return 2
    for warning in _unmatched(runs, methods, datasets, factors, group_by):
        console.print(warning, style="yellow", markup=False)

    labelled = label_runs(runs, group_by)
    agg = aggregate(labelled)
    baseline, warning = significance.resolve_baseline(labelled, args.baseline)
    if warning:
        console.print(warning, style="yellow", markup=False)
    assessment = significance.assess(labelled, baseline)
    rankings = significance.ranking_section(agg)
    provenance = Provenance(labelled)
    calibration = calibration_.collect(labelled, results.predictions)
    left_out = left_out + calibration.left_out
    sections = [tables.main_table(agg, assessment),
                significance.interval_section(agg, assessment),
                significance.baseline_section(assessment), rankings.section,
                tables.many_medium_few_tables(agg, assessment),
                calibration_.ece_section(calibration, list(dict.fromkeys(agg["label"]))),
                comparison.paper_comparison(agg, load_published()), cost.cost_table(labelled),
                provenance.section(), left_out_section(left_out)]
    sections = [s for s in sections if s is not None]
    render.clear_generated(out)
    figures = plots.draw_all(agg, labelled, results.per_class, _bench_for(results, methods),
                             out / "figures", ranking=rankings.by_metric["top1"],
                             history=results.history, calibration=calibration)
    summary = left_out_summary(left_out)
    meta = render.Meta(results_dir=str(results_dir), runs=len(labelled), specs=len(agg),
                       filters=filters, generated=datetime.now().strftime("%Y-%m-%d %H:%M"),
                       version=__version__, left_out=summary)
    page = render.write_report(out, sections, figures, meta, provenance)

    # the headline tables: top-1, its comparison with the baseline, the ranks
    for section in sections:
        if section.name in ("main", "baseline", "ranking") and section.tables:
            _print_table(console, section.tables[0])
    console.print(f"{plural(len(labelled), 'finished run')}, "
                  f"{plural(len(agg), 'spec')}{filters}.", markup=False)
    if any(e.kind != "unused file" for e in left_out):
        console.print(f"[yellow]{escape(summary)}[/] See 'Left out' in the report.")
    no_curves = curves.no_history_line(labelled, results.history)
    if no_curves:
        console.print(no_curves, markup=False)
    for mix in provenance.mixes[:MIXES_PRINTED]:
        console.print("Warning: " + mix.text(), style="yellow", markup=False)
    if len(provenance.mixes) > MIXES_PRINTED:
        console.print(f"... and {len(provenance.mixes) - MIXES_PRINTED} more cells that mix data "
                      "or code: see 'Provenance' in the report.", style="yellow", markup=False)
    console.print(f"Report written to [bold]{escape(str(page))}[/] (tables in "
                  f"{escape(str(out / 'tables'))}, figures in {escape(str(out / 'figures'))}).")
    return 0


MIXES_PRINTED = 10  # the report lists every cell that mixes runs; the terminal the first few


def _split(values) -> list[str]:
    """`--methods ce focal`, `--methods ce,focal` and repeated flags all mean the same."""
    return [part.strip() for value in values or [] for part in str(value).split(",")
            if part.strip()]


def _describe_filters(methods, datasets, factors, group_by, tag=None) -> str:
    parts = [f"tag {tag.strip()}" if tag else "",
             f"methods {', '.join(methods)}" if methods else "",
             f"datasets {', '.join(datasets)}" if datasets else "",
             f"IF {', '.join(f'{f:g}' for f in factors)}" if factors else "",
             f"grouped by {', '.join(group_by)}" if group_by else ""]
    parts = [p for p in parts if p]
    return f" ({'; '.join(parts)})" if parts else ""


def _unmatched(runs, methods, datasets, factors, group_by) -> list[str]:
    """A typo in one filter value should be said out loud, not silently drop a row."""
    from .labels import SETTING_COLUMNS

    warnings = [f"{flag}: no finished run has {column} {value!r}."
                for flag, wanted, column in [("--methods", methods, "method"),
                                             ("--datasets", datasets, "dataset"),
                                             ("--if", factors, "imbalance_factor")]
                for value in wanted if value not in set(runs[column])]
    params = set().union(*runs["params_dict"].map(set))
    for key in group_by:
        if key not in params and key not in SETTING_COLUMNS:
            known = ", ".join(sorted(params)) or "none"
            warnings.append(f"--group-by {key}: no run has this setting (params keys: {known}).")
    return warnings


def _bench_for(results, methods):
    """The feature-loss memory curve belongs with the contrastive methods; leave it out when they are."""
    from .names import has_feature_branch

    if methods and not any(has_feature_branch(m) for m in methods):
        return None
    return results.bench


def _explain_nothing(console, all_runs, results_dir, filters, left_out) -> None:
    from .names import method_rank
    from .aggregate import table_cells
    from .left_out import left_out_summary

    if len(all_runs):
        methods = sorted(all_runs["method"].unique(), key=method_rank)
        datasets = [d for d, _ in table_cells(all_runs.drop_duplicates("dataset"))]
        factors = sorted(all_runs["imbalance_factor"].dropna().unique())
        console.print(f"No finished run in '{results_dir}' matches the filters{filters}.",
                      style="red", markup=False)
        console.print(f"Available: methods {', '.join(methods)}; datasets "
                      f"{', '.join(datasets)}; IF {', '.join(f'{f:g}' for f in factors)}.",
                      markup=False)
    else:
        console.print(f"No finished runs in '{results_dir}'.", style="red", markup=False)
        console.print("A run counts once its folder holds a result.csv with status done.")
    if left_out:
        console.print(left_out_summary(left_out))
        for entry in left_out[:10]:
            console.print(f"  {entry.path}: {entry.kind}: {entry.reason}", markup=False)
        if len(left_out) > 10:
            console.print(f"  ... and {len(left_out) - 10} more")


def _print_table(console, table) -> None:
    from rich import box
    from rich.table import Table as RichTable
    from rich.text import Text

    rich_table = RichTable(title=table.title, title_justify="left", box=box.SIMPLE_HEAD)
    groups = [name for name, span in table.groups for _ in range(span)]
    for j, name in enumerate(table.header):
        group = groups[j] if groups else ""
        rich_table.add_column(f"{group}\n{name}" if group else name, no_wrap=j == 0,
                              justify="left" if j == 0 else "right")
    for i, row in enumerate(table.rows):
        rich_table.add_row(*[Text(t, style=" ".join(
            s for s, on in (("bold green", (i, j) in table.bold),
                            ("underline", (i, j) in table.underline),
                            ("italic", (i, j) in table.italic)) if on))
            for j, t in enumerate(row)])
    console.print(rich_table)
    for note in table.notes:
        console.print(note, style="dim", markup=False)
