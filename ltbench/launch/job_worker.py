"""One job of `ltbench run --jobs N` (or `ltbench evaluate --jobs N`): a process that trains
(or evaluates) one run and exits.

    python -m ltbench.launch.job_worker --results-dir DIR --device DEV --threads T --context JSON
        [--task train|evaluate] [--wait] [--launcher-pid PID] SPEC_JSON

ltbench.launch.jobs starts it; its exit status says how the run ended (EXIT_CODES), its
output is one plain line per epoch. A process per run keeps the jobs apart: a run that
crashes, or is killed for memory, takes no other run with it.
"""

import argparse
import ctypes
import json
import os
import signal
import sys
import threading
import time

# how the run ended, as the exit status says it to the launcher
EXIT_CODES = {"done": 0, "failed": 1, "busy": 3}
INTERRUPTED = 130  # as a shell reports a process ended by Ctrl-C
PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCH_SECONDS = 1.0


def end_with_launcher(launcher_pid: int) -> None:
    """This process ends when the launcher does, however it ends (a kill -9 included): else
    its jobs would go on training runs no one waits for. Its writes are atomic and its run
    lock is the kernel's, so being killed at any point leaves the run resumable."""
    try:
        # Linux: the kernel sends SIGKILL when the thread that started this process ends (the
        # launcher starts its jobs from its main thread)
        if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):  # not Linux: watch for the launcher's end instead
        def watch():
            while os.getppid() == launcher_pid:
                time.sleep(WATCH_SECONDS)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, daemon=True, name="launcher-watch").start()
    if os.getppid() != launcher_pid:  # it ended before the signal was asked for
        os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ltbench.launch.job_worker")
    parser.add_argument("spec", help="the run's spec, as JSON")
    parser.add_argument("--results-dir", required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--context", required=True, help="the run's context (ltbench.run_context), as JSON")
    parser.add_argument("--task", default="train", choices=["train", "evaluate"],
                        help="what to do with the run (ltbench.launch.tasks)")
    parser.add_argument("--wait", action="store_true", help="wait for a run another process holds")
    parser.add_argument("--launcher-pid", type=int, help="end when this process (the launcher) ends")
    args = parser.parse_args(argv)
    if args.launcher_pid is not None:
        end_with_launcher(args.launcher_pid)
    try:
        import torch

        from ltbench.launch.tasks import TASKS
        from ltbench.progress import PlainReporter
        from ltbench.run_context import RunContext
        from ltbench.spec import RunSpec

        # the thread count is part of a CPU run's arithmetic, and the result row records it
        torch.set_num_threads(args.threads)
        spec = RunSpec.from_dict(json.loads(args.spec))
        status = TASKS[args.task].payload(spec, args.results_dir, args.device, PlainReporter(),
                                          RunContext.from_dict(json.loads(args.context)),
                                          log=lambda line: print(line, flush=True), wait=args.wait)
    except KeyboardInterrupt:
        # the launcher may pass Ctrl-C on after the terminal did: a second one must not cut
        # this exit short. The last epoch checkpoint is on disk; a rerun resumes from it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return INTERRUPTED
    return EXIT_CODES[status]


if __name__ == "__main__":
    sys.exit(main())
