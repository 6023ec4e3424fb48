"""`ltbench bench`: three measurements, one module each. By default the training throughput
of ltbench's data path against the reference loop of the original codebases (throughput);
`--profiler`, where ltbench's step time goes (profile); `--memory`, the hybrids' feature
losses' memory by batch size (memory)."""

import os

from ltbench.errors import UserError

# what the feature-loss memory measurement (ltbench.bench.memory) measures: its batch sizes,
# and each loss with the registered method whose feature loss it is (PaCo's with its queue
# and class centres)
BATCH_SIZES = (128, 256, 512, 1024, 2048, 4096)
FEATURE_LOSSES = {"sc": "sc_hybrid", "psc": "psc_hybrid", "bcl": "bcl", "paco": "paco", "kcl": "kcl_stage1",
                  "tsc": "tsc_stage1"}
DEFAULT_LOSSES = ("sc", "psc")


def add_arguments(parser) -> None:
    # an abbreviation would let `--profile`, `ltbench run`'s imbalance profile, pass for --profiler
    parser.allow_abbrev = False
    parser.add_argument("--methods", default="ce", help="comma list (default ce)")
    parser.add_argument("--dataset", default="fashion_mnist_lt")
    parser.add_argument("--if", dest="imbalance_factor", type=float, default=100.0)
    parser.add_argument("--backbone", default="resnet32_cifar")
    parser.add_argument("--batch-size", type=int, default=128)
    # short rounds, many of them: each ratio compares measurements taken seconds apart
    parser.add_argument("--steps", type=int, default=10,
                        help="timed steps per round (with --profiler: profiled steps)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of timing: each round times every variant and the reference in turn")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="reference DataLoader workers")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-root")
    parser.add_argument("--out", help="CSV path (default results/bench/throughput.csv; "
                                      "profile.csv with --profiler, feature_loss_memory.csv with --memory)")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    parser.add_argument("--memory", action="store_true",
                        help="measure the SC and PSC feature losses' peak memory and step time by batch size instead")
    # not --profile: that is `ltbench run`'s imbalance profile
    parser.add_argument("--profiler", action="store_true",
                        help="instead of throughput: where ltbench's step time goes, by kind of operation")
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)),
                        help="with --memory: comma list (default 128 to 4096)")
    parser.add_argument("--classes", type=int, default=100,
                        help="with --memory: PSC's and BCL's prototypes, PaCo's centres (default 100)")
    parser.add_argument("--losses", default=",".join(DEFAULT_LOSSES),
                        help=f"with --memory: comma list of {', '.join(FEATURE_LOSSES)} (default sc,psc)")
    parser.add_argument("--plot", default="reports/feature_loss_memory.png", help="with --memory: figure path, '' for none")
    parser.add_argument("--threads", type=int, help="CPU threads (default torch's); 1 steadies timings on a busy machine")


def run(args) -> int:
    # the measurements import torch: only once one is asked for, never to build `ltbench --help`
    from ltbench.bench import memory, profile, throughput

    if args.memory and args.profiler:
        raise UserError("--memory and --profiler are two different measurements", hint="give one of them")
    if args.steps < 1 or args.rounds < 1 or args.warmup_steps < 0:
        raise UserError(f"--steps and --rounds must be at least 1 and --warmup-steps at least 0, got "
                        f"{args.steps}, {args.rounds} and {args.warmup_steps}",
                        hint="e.g. --steps 10 --rounds 5 --warmup-steps 5 (the defaults)")
    if args.memory:
        return memory.run(args)
    if args.profiler:
        return profile.run(args)
    return throughput.run(args)
