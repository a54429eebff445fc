"""The ``qbuild`` command line: run, experiments, plan, summary.

Bad input ends with one line on stderr, ``qbuild: error: <problem>; fix: <fix>``, and exit
status 2. ``summary`` reads results files only and never imports TVM or torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from qbuild.errors import QbuildError

DEFAULT_RESULTS = Path("results")


def _add_run_options(parser: argparse.ArgumentParser, many: bool) -> None:
    from qbuild.plan import PROFILES

    if many:
        parser.add_argument("--models", nargs="+", metavar="MODEL", help="models (default: the profile's)")
        parser.add_argument("--variants", nargs="+", metavar="VARIANT", help="variants (default: all)")
        parser.add_argument("--targets", nargs="+", metavar="TARGET",
                            help="auto | cpu | cuda (default: cpu, plus cuda when a GPU is visible)")
    else:
        parser.add_argument("--model", default="resnet50", help="model name (default: resnet50)")
        parser.add_argument("--variant", default="float", help="variant (default: float)")
        parser.add_argument("--target", default="auto", help="auto | cpu | cuda (default: auto)")
    parser.add_argument("--profile", default="default", choices=sorted(PROFILES),
                        help="how thoroughly to run (default: default)")
    parser.add_argument("--weights", default="auto", help="auto | pretrained | random (default: auto)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results root (default: results)")
    parser.add_argument("--dataset", help="labelled images for calibration and accuracy "
                        "(default: $QBUILD_DATASET or ../shared/data/imagenet-val-1300)")
    parser.add_argument("--force", action="store_true", help="re-run even if a current result exists")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    bench = parser.add_argument_group("benchmark protocol overrides (default: the profile's)")
    bench.add_argument("--iterations", type=int, help="iterations, each with a fresh random input")
    bench.add_argument("--executions", type=int, help="timed executions per iteration")
    bench.add_argument("--warmup", type=int, help="untimed warm-up executions")
    bench.add_argument("--budget", type=float, help="seconds of timing per experiment (0: no cap)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="qbuild", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_options(sub.add_parser("run", help="run one experiment"), many=False)
    _add_run_options(sub.add_parser("experiments", help="run the plan (default: the default plan)"), many=True)
    _add_run_options(sub.add_parser("plan", help="list what a plan would run, without running it"), many=True)
    summary = sub.add_parser("summary", help="one row per results file (reads results only)")
    summary.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results root (default: results)")
    summary.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _protocol(args: argparse.Namespace):
    from qbuild.plan import get_profile

    base = get_profile(args.profile).protocol
    changes = {name: getattr(args, name) for name in ("iterations", "executions", "warmup") if getattr(args, name) is not None}
    if args.budget is not None:
        changes["budget_s"] = args.budget or None
    return dataclasses.replace(base, **changes)


def _plan(args: argparse.Namespace, many: bool):
    from qbuild.plan import build_plan

    models = args.models if many else [args.model]
    variants = args.variants if many else [args.variant]
    targets = args.targets if many else [args.target]
    return build_plan(models, variants, targets, args.profile, args.weights, _protocol(args), args.dataset)


def _cmd_plan(args: argparse.Namespace) -> int:
    experiments = _plan(args, many=True)
    for exp in experiments:
        p = exp.protocol
        budget = f", budget {p.budget_s:g}s" if p.budget_s else ""
        size = exp.profile.image_size or "model's own"
        print(f"{exp.id}: {exp.variant.label} on {exp.target.device_name}; input {size}; "
              f"protocol {p.iterations}x{p.executions} (+{p.warmup} warm-up{budget})")
    print(f"{len(experiments)} experiment(s)")
    return 0


def _cmd_run(args: argparse.Namespace, many: bool) -> int:
    from qbuild.progress import Progress
    from qbuild.runner import run_plan

    outcomes = run_plan(_plan(args, many), args.results, args.force, Progress(quiet=args.quiet))
    failed = 0
    for outcome in outcomes:
        errors = {n: s for n, s in outcome.record["stages"].items() if s["status"] == "error"}
        failed += bool(errors)
        for name, stage in errors.items():
            print(f"qbuild: {outcome.record['id']}: stage {name} failed: {stage['error']['message']}", file=sys.stderr)
    print(f"{len(outcomes)} experiment(s), {failed} with a failed stage (results under {args.results})")
    # A failed stage is a finding (the bit-width sweep expects some), recorded in its results file.
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from qbuild.summary import collect, render_json, render_table

    rows, problems = collect(args.results)
    if args.json:
        print(render_json(rows, problems))
    elif rows:
        print(render_table(rows))
    else:
        print(f"no results under {args.results}: run `qbuild experiments` (or `nox -s experiments`) first")
    for problem in problems:
        print(f"qbuild: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``qbuild`` and ``python -m qbuild``."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "summary":
            return _cmd_summary(args)
        if args.command == "plan":
            return _cmd_plan(args)
        return _cmd_run(args, many=args.command == "experiments")
    except QbuildError as exc:
        print(f"qbuild: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qbuild: interrupted; results written so far are kept", file=sys.stderr)
        return 130
