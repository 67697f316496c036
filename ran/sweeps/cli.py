"""``python -m ran sweep SWEEP.yaml --executor local|slurm|serial [--max-parallel N]``.

Runs every config of a sweep file as one job (:mod:`ran.sweeps.sweep`, :mod:`ran.training.jobs`) and
merges the results into ``<results>/sweeps/<name>.{json,csv}``. A rerun skips the
finished jobs; after an interruption the same command resumes. Exit codes: 0 every job
finished, 1 some failed (listed in the table and printed), 2 a bad sweep file (one
sentence naming the field), 130 interrupted.
"""

from __future__ import annotations

import sys

from ran.util.results import PROFILES

USER_ERROR, FAILED, INTERRUPTED = 2, 1, 130


def add_sweep_parser(sub) -> None:
    """Add the ``sweep`` sub-command to an argparse subparsers object."""
    sw = sub.add_parser(
        "sweep",
        help="run a sweep file's configs as independent jobs (submitit), merge one table",
        description="Train (or load, by config hash) and evaluate every config of a sweep "
        "file as an independent job, and merge the results into one tidy table under "
        "<results>/sweeps/. A rerun skips finished jobs; rerun after an interruption to resume.",
    )
    sw.add_argument("sweep", help="YAML or JSON sweep file (see sweeps/example_local.yaml)")
    sw.add_argument(
        "--executor",
        choices=("local", "slurm", "serial"),
        default="local",
        help="local: subprocesses of this machine (submitit LocalExecutor); slurm: one job "
        "array (submitit SlurmExecutor, options from the file's 'slurm' mapping); serial: "
        "in this process (default: local)",
    )
    sw.add_argument(
        "--max-parallel",
        type=int,
        metavar="N",
        help="jobs running at once (default: the file's executor.max_parallel, else 2)",
    )
    sw.add_argument(
        "--profile", choices=PROFILES, help="output roots (default: the file's profile)"
    )
    sw.add_argument(
        "--dry-run", action="store_true", help="list the jobs and whether each is finished"
    )


def cmd_sweep(args) -> int:
    """Run the ``sweep`` verb; user errors print one sentence and return 2."""
    from ran.cli.common import CLIError
    from ran.sweeps.sweep import read_sweep, run_sweep
    from ran.util.configio import ConfigError
    from ran.util.results import Outputs

    try:
        if args.max_parallel is not None and args.max_parallel < 1:
            raise CLIError(f"--max-parallel must be >= 1, got {args.max_parallel}.")
        sweep = read_sweep(args.sweep)
    except (CLIError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR
    outputs = Outputs(args.profile or sweep.profile)
    if args.dry_run:
        return _dry_run(sweep, outputs)
    try:
        rep = run_sweep(sweep, args.executor, args.max_parallel, outputs)
    except KeyboardInterrupt:
        print(
            "interrupted: the finished jobs are kept; run the same command again to resume.",
            file=sys.stderr,
        )
        return INTERRUPTED
    except RuntimeError as err:
        if "srun" in str(err):  # submitit: no Slurm on this machine
            print(
                "error: the slurm executor needs sbatch and srun on PATH (a Slurm login node).",
                file=sys.stderr,
            )
            return USER_ERROR
        raise
    print(
        f"sweep {rep.name}: {len(rep.rows)} of {rep.n_jobs} jobs finished ({rep.skipped} "
        f"earlier), {len(rep.failures)} failed, in {rep.wall_s:.0f} s"
    )
    for f in rep.failures:
        print(f"  FAILED {f['key']}: {f['error']} (log: {f['log']})")
    print(f"table: {outputs.rel(rep.csv)} and {outputs.rel(rep.table)}")
    return FAILED if rep.failures else 0


def _dry_run(sweep, outputs) -> int:
    from ran.sweeps.sweep import _folder

    folder, ek = _folder(outputs, sweep.name) / "done", sweep.eval_key()
    jobs = sweep.jobs()
    n_done = 0
    for tag, cfg in jobs:
        h = cfg.config_hash()
        done = (folder / f"{h}-{ek}.json").is_file()
        n_done += done
        print(
            f"{h} {'done   ' if done else 'to run '} "
            + ", ".join(f"{k}={v}" for k, v in tag.items())
        )
    print(f"sweep {sweep.name}: {len(jobs)} jobs, {n_done} finished")
    return 0
