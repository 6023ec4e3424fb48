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
    parser.add_argument("--latex-width", choices=["column", "page", "landscape"], default="column",
                        help="how wide tables may be in the .tex files: column (default; a wide table is "
                             "scaled down to one article column), page (table* across both columns of a "
                             "two-column paper, scaled to fit it) or landscape (a sideways page, needs "
                             "the rotating package)")
    parser.add_argument("--long", action="store_true",
                        help="write only <out>/runs_long.csv: one row per finished run and metric "
                             "(top-1, many/medium/few, cost, ECE where predictions were saved), for "
                             "pandas; no tables or figures")


def run(args) -> int:
    """Build the report (or, with --long, only the long-format CSV); 0 on success. Bad
    filters and a results dir with nothing to report raise UserError (exit 2)."""
    from datetime import datetime
    from pathlib import Path

    from rich.console import Console
    from rich.markup import escape

    from .. import __version__
    from . import (calibration as calibration_, comparison, cost, curves, plots, ranks, render,
                   significance, tables, tuning)
    from .aggregate import aggregate
    from .formats import plural
    from .labels import label_runs
    from .left_out import left_out_section, left_out_summary
    from .provenance import Provenance
    from .reference import load_published
    from .selection import select, split

    # Soft wrap: messages carry paths that must stay whole to be copied.
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = max(console.width, 200)  # a log has no edge to fit the table to
    out = Path(args.out)
    chosen = select(args)
    results, filters = chosen.results, chosen.filters
    studies = tuning.read_studies(args.results_dir, chosen.runs)
    # a study's trials are its history, not rows to compare: shown as runs only when asked for by tag
    labelled = label_runs(chosen.runs if args.tag else tuning.without_trials(chosen.runs, studies),
                          split(args.group_by))
    baseline, warning = significance.resolve_baseline(labelled, args.baseline)
    for line in chosen.warnings + ([warning] if warning else []):
        console.print(line, style="yellow", markup=False)
    calibration = calibration_.collect(labelled, results.predictions)
    if args.long:
        from .long_format import write_long

        path = write_long(out, labelled, calibration)
        console.print(f"{plural(len(labelled), 'finished run')}{filters}: one row per run "
                      f"and metric in [bold]{escape(str(path))}[/].")
        return 0

    agg = aggregate(labelled)
    assessment = significance.assess(labelled, baseline, metrics=tables.ASSESSED)
    rankings = ranks.ranking_section(agg)
    provenance = Provenance(labelled)
    left_out = chosen.left_out + calibration.left_out
    sections = [tables.main_table(agg, assessment),
                significance.interval_section(agg, assessment),
                significance.baseline_section(assessment), tuning.tuning_section(labelled, studies),
                rankings.section,
                tables.many_medium_few_tables(agg, assessment),
                calibration_.ece_section(calibration, list(dict.fromkeys(agg["label"]))),
                comparison.paper_comparison(agg, load_published()), cost.cost_table(labelled, results.runs),
                provenance.section(), left_out_section(left_out)]
    sections = [s for s in sections if s is not None]
    render.clear_generated(out)
    figures = plots.draw_all(agg, labelled, results.per_class,
                             _bench_for(results, split(args.methods)), out / "figures",
                             ranking=rankings.by_metric["top1"], history=results.history,
                             calibration=calibration)
    figures += tuning.history_figures(studies, out / "figures")
    summary = left_out_summary(left_out)
    meta = render.Meta(results_dir=str(args.results_dir), runs=len(labelled), specs=len(agg),
                       filters=filters, generated=datetime.now().strftime("%Y-%m-%d %H:%M"),
                       version=__version__, left_out=summary)
    page = render.write_report(out, sections, figures, meta, provenance, args.latex_width)

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


def _bench_for(results, methods):
    """The feature-loss memory curve belongs with the contrastive methods; leave it out when they are."""
    from .names import has_feature_branch

    if methods and not any(has_feature_branch(m) for m in methods):
        return None
    return results.bench


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
