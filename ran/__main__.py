"""Command line: ``python -m ran {run,report,bench,sweep,train,eval,demo,agent} ...``.

- ``run --profile {smoke,default,paper} [--only 01,03] [--lanes N] [-p name value] [--record R]``:
  execute the notebooks with papermill (N at once), export HTML (see :mod:`ran.pipeline`).
- ``report --profile P [--no-pdf] [--diff DIR]``: fill FINDINGS.md from data/results and build the
  PDF (``--diff``: only compare the results with another folder's, timing left out).
- ``bench {overhead,passcost,sweep,lowercache,notebooks,training,agent,all} [--profile P]``:
  benchmarks measured in one run, saved as sections of data/results/bench.json (see
  :mod:`ran.bench`); ``bench refresh`` rebuilds its checks, sentences and findings from the
  stored measurements without measuring.
- ``sweep SWEEP.yaml --executor {local,slurm,serial} [--max-parallel N]``: every config of a
  sweep file as an independent job (submitit), one merged table under data/results/sweeps/
  (see :mod:`ran.sweeps.sweep`, :mod:`ran.sweeps.cli`).
- ``train CONFIG [--out DIR] [--profile P]``: train a TrainConfig file, save the adapter.
- ``eval ADAPTER [--probe NAME] [--param k=v ...] [--n-test N] [--out FILE]``: every control.
- ``demo [--adapter DIR]``: write a secret in one process, recall it in another
  (the three library verbs live in :mod:`ran.cli.core` and :mod:`ran.cli.demo`).
- ``agent [--adapter DIR] [--idle-every SECONDS] [--script FILE]``: the Reservoir Agent, a
  persistent chat loop with idle ticks and checkpoints (:mod:`ran.agent.cli`).
"""

from __future__ import annotations

import argparse
import sys

from ran.bench import BENCHES
from ran.cli import core as cli
from ran.report.notebooks import RECORDS
from ran.util.results import PROFILES, Outputs


def _parse_value(text: str):
    """Papermill parameters from the command line: int, float, bool or str."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ran", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute the notebooks in order (papermill)")
    run.add_argument("--profile", choices=PROFILES, default="default")
    run.add_argument("--only", action="append", help="notebook number(s), e.g. 01 or 01,03")
    run.add_argument(
        "-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[]
    )
    run.add_argument("--no-html", action="store_true", help="skip the HTML export")
    run.add_argument(
        "--lanes", type=int, default=None,
        help="notebooks run at once, 1 torch thread each (default 1: in order, as before)",
    )  # fmt: skip
    run.add_argument(
        "--record", choices=RECORDS, default="pipeline",
        help="results file of the timing (pipeline_warm: a warm rerun, as make warm records it)",
    )  # fmt: skip

    rep = sub.add_parser("report", help="fill FINDINGS.md from data/results and build the PDF")
    rep.add_argument("--profile", choices=PROFILES, default="default")
    rep.add_argument("--no-pdf", action="store_true")
    rep.add_argument(
        "--diff", metavar="DIR", default=None,
        help="only compare the profile's results with DIR's (timing and provenance left out)",
    )  # fmt: skip

    bench = sub.add_parser("bench", help="benchmarks, saved to data/results/bench.json")
    bench.add_argument("which", choices=[*BENCHES, "all", "refresh"])
    bench.add_argument("--profile", choices=PROFILES, default="default")
    cli.add_parsers(sub)
    from ran.sweeps.cli import add_sweep_parser

    add_sweep_parser(sub)
    from ran.agent.cli import add_agent_parser

    add_agent_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in cli.COMMANDS:
        return cli.run(args)
    if args.command == "agent":
        from ran.agent.cli import cmd_agent

        return cmd_agent(args)
    if args.command == "sweep":
        from ran.sweeps.cli import cmd_sweep

        return cmd_sweep(args)
    if args.command == "run":
        from ran.pipeline import PipelineError, run

        params = {name: _parse_value(value) for name, value in args.param}
        try:
            rep = run(args.profile, args.only, params, html=not args.no_html, lanes=args.lanes,
                      record=args.record)  # fmt: skip
        except PipelineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        total = sum(rep.wall_time_s.values())
        print(f"ran {len(rep.wall_time_s)} notebook(s) in {rep.elapsed_s:.0f} s, {rep.lanes} at "
              f"a time ({total:.0f} s of notebooks; profile {args.profile})")  # fmt: skip
        return 0
    if args.command == "report" and args.diff:
        from ran.report.resdiff import diff_dirs, render

        print(render(diff_dirs(Outputs(args.profile).results, args.diff)))
        return 0
    if args.command == "report":
        from ran.report.findings import report

        out = report(args.profile, pdf=not args.no_pdf)
        print(f"filled {len(out['filled'])} section(s) of {out['findings']}")
        if "pdf" in out:
            print(f"PDF: {out['pdf']}")
        return 0
    if args.command == "bench":
        from ran.bench import run_benches

        run_benches(args.which, Outputs(args.profile))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
