"""The ``qbuild`` command line: run, experiments, plan, compare, subbyte-kernels, tune, profile, layers, models,
summary.

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
TUNE_VARIANTS = ("float", "int8-a8")


def _add_run_options(parser: argparse.ArgumentParser, many: bool) -> None:
    from qbuild.plan import PROFILES

    if many:
        parser.add_argument("--models", nargs="+", metavar="MODEL", help="models (default: the profile's)")
        parser.add_argument("--variants", nargs="+", metavar="VARIANT", help="variants (default: all)")
        parser.add_argument(
            "--targets",
            nargs="+",
            metavar="TARGET",
            help="auto | cpu | cuda | rpc:KEY[@TRIPLE[/MCPU][+FEATURE...]] (the devices registered under KEY "
            "at --tracker; default: cpu, plus cuda when a GPU is visible)",
        )
        parser.add_argument(
            "--kernels",
            nargs="+",
            metavar="SET",
            help="kernel sets: builtin | tuned | untuned (default: builtin, and for the "
            "study's four variants untuned, and tuned on the CPU when this machine has a "
            "tuning database)",
        )
        parser.add_argument(
            "--stop-after",
            type=float,
            metavar="SECONDS",
            help="start no experiment after this many seconds (default: no limit)",
        )
        parser.add_argument(
            "--jobs",
            type=int,
            default=2,
            metavar="N",
            help="run the plan's models as N parallel processes whose untimed stages overlap; "
            "timed stages always run alone (default: 2; 1: one process)",
        )
    else:
        parser.add_argument("--model", default="resnet50", help="model name (default: resnet50)")
        parser.add_argument("--variant", default="float", help="variant (default: float)")
        parser.add_argument(
            "--target", default="auto", help="auto | cpu | cuda | rpc:KEY[@TRIPLE[/MCPU][+FEATURE...]] (default: auto)"
        )
        parser.add_argument(
            "--kernels", default="builtin", help="kernel set: builtin | tuned | untuned (default: builtin)"
        )
    parser.add_argument(
        "--profile", default="default", choices=sorted(PROFILES), help="how thoroughly to run (default: default)"
    )
    parser.add_argument("--weights", default="auto", help="auto | pretrained | random (default: auto)")
    parser.add_argument(
        "--tracker",
        metavar="HOST:PORT",
        help="the TVM RPC tracker of rpc: targets (default: $TVM_TRACKER_HOST:$TVM_TRACKER_PORT)",
    )
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results root (default: results)")
    parser.add_argument(
        "--dataset",
        help="labelled images for calibration and accuracy "
        "(default: $QBUILD_DATASET or ../shared/data/imagenet-val-1300)",
    )
    parser.add_argument("--force", action="store_true", help="re-run even if a current result exists")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    bench = parser.add_argument_group("benchmark protocol overrides (default: the profile's)")
    bench.add_argument("--iterations", type=int, help="iterations, each with a fresh random input")
    bench.add_argument("--executions", type=int, help="timed executions per iteration")
    bench.add_argument("--warmup", type=int, help="untimed warm-up executions")
    bench.add_argument("--budget", type=float, help="seconds of timing per experiment (0: no cap)")


def _add_compare_options(parser: argparse.ArgumentParser) -> None:
    from qbuild.compare import DEFAULT_BUILDS

    parser.add_argument("--model", default="resnet50", help="model name (default: resnet50)")
    parser.add_argument("--target", choices=("cpu", "cuda"), default="cpu", help="where to time them (default: cpu)")
    parser.add_argument(
        "--variants",
        nargs="+",
        metavar="VARIANT",
        help="builds to compare (default on the CPU: "
        + " ".join(DEFAULT_BUILDS["cpu"])
        + "; on CUDA: "
        + " ".join(DEFAULT_BUILDS["cuda"])
        + ")",
    )
    parser.add_argument(
        "--kernels",
        help="kernel set for qbuild's builds (default: tuned on a CPU with a tuning database, else builtin)",
    )
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default: 15)")
    parser.add_argument("--executions", type=int, default=10, help="timed runs of each build per round (default: 10)")
    parser.add_argument(
        "--idle",
        type=float,
        default=1.0,
        help="after each build's turn, idle this many times as long as the turn took, so that a machine that "
        "slows under sustained load (a shared VM) times every build rested (default: 1.0; 0: back to back)",
    )
    parser.add_argument("--weights", default="auto", help="auto | pretrained | random (default: auto)")
    parser.add_argument("--dataset", help="labelled images for calibration (default: as for experiments)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results root (default: results)")
    parser.add_argument("--no-save", action="store_true", help="print only; write no results file")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="qbuild", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_options(sub.add_parser("run", help="run one experiment"), many=False)
    _add_run_options(sub.add_parser("experiments", help="run the plan (default: the default plan)"), many=True)
    _add_run_options(sub.add_parser("plan", help="list what a plan would run, without running it"), many=True)
    compare = sub.add_parser("compare", help="time several builds of one model side by side and print ratios")
    _add_compare_options(compare)
    kernels = sub.add_parser(
        "subbyte-kernels", help="time bit-serial convs against the int8 conv of ResNet-50's shapes side by side"
    )
    kernels.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default: 7)")
    kernels.add_argument("--executions", type=int, default=10, help="timed runs of each kernel per round (default: 10)")
    kernels.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results root (default: results)")
    kernels.add_argument("--no-save", action="store_true", help="print only; write no results file")
    tune = sub.add_parser(
        "tune",
        help="time every register tile of each conv of the models on this machine; "
        "write the fastest into its tuning database (used by --kernels tuned)",
    )
    tune.add_argument("--models", nargs="+", metavar="MODEL", help="models (default: the profile's)")
    tune.add_argument(
        "--variants",
        nargs="+",
        metavar="VARIANT",
        default=list(TUNE_VARIANTS),
        help=f"variants whose convs are tuned (default: {' '.join(TUNE_VARIANTS)}; every int8 "
        "variant shares int8-a8's convs)",
    )
    tune.add_argument("--profile", default="default", help="profile (its image size; default: default)")
    tune.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default: 5)")
    tune.add_argument("--executions", type=int, default=10, help="timed runs of each tile per round (default: 10)")
    tune.add_argument("--weights", default="auto", help="auto | pretrained | random (default: auto)")
    tune.add_argument("--dataset", help="labelled images for calibration (default: as for experiments)")
    tune.add_argument(
        "--missing",
        action="store_true",
        help="tune only the workloads the database holds no record of (e.g. after a change to a conv)",
    )
    tune.add_argument(
        "--prune",
        action="store_true",
        help="drop the database's records of workloads these models and variants no longer have",
    )
    tune.add_argument(
        "--output",
        type=Path,
        help="database file (default: this machine's, under $QBUILD_TUNING_DIR or tuning/); merged with what it holds",
    )
    profile = sub.add_parser(
        "profile", help="time each generated function of one TVM build (a CUDA build without its CUDA graph)"
    )
    _add_run_options(profile, many=False)
    profile.add_argument("--runs", type=int, default=10, help="profiled runs (default: 10)")
    profile.add_argument("--top", type=int, default=25, help="functions listed (default: 25)")
    layers = sub.add_parser(
        "layers",
        help="where a quantized build loses accuracy: each conv/dense layer's "
        "output against the float model's (SQNR, dB) on held-out images",
    )
    _add_run_options(layers, many=False)
    sub.add_parser("models", help="list the models that --model / --models take (imports torchvision)")
    summary = sub.add_parser("summary", help="one row per results file (reads results only)")
    summary.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results root (default: results)")
    summary.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _protocol(args: argparse.Namespace):
    from qbuild.plan import get_profile

    base = get_profile(args.profile).protocol
    changes = {
        name: getattr(args, name) for name in ("iterations", "executions", "warmup") if getattr(args, name) is not None
    }
    if args.budget is not None:
        changes["budget_s"] = args.budget or None
    return dataclasses.replace(base, **changes)


def _plan(args: argparse.Namespace, many: bool):
    from qbuild.plan import build_plan

    models = args.models if many else [args.model]
    variants = args.variants if many else [args.variant]
    targets = args.targets if many else [args.target]
    kernels = args.kernels if many else [args.kernels]
    return build_plan(
        models, variants, targets, args.profile, args.weights, _protocol(args), args.dataset, kernels, args.tracker
    )


def _cmd_plan(args: argparse.Namespace) -> int:
    experiments = _plan(args, many=True)
    for exp in experiments:
        p = exp.protocol
        budget = f", budget {p.budget_s:g}s" if p.budget_s else ""
        size = exp.profile.image_size or "model's own"
        kernels = f" ({exp.kernels} kernels)" if exp.kernels else ""
        print(
            f"{exp.id}: {exp.variant.label}{kernels} on {exp.target.device_name}; input {size}; "
            f"protocol {p.iterations}x{p.executions} (+{p.warmup} warm-up{budget})"
        )
    print(f"{len(experiments)} experiment(s)")
    return 0


def _cmd_run(args: argparse.Namespace, many: bool) -> int:
    from qbuild.progress import Progress
    from qbuild.scheduler import run_plan

    outcomes = run_plan(
        _plan(args, many),
        args.results,
        args.force,
        Progress(quiet=args.quiet),
        getattr(args, "stop_after", None),
        getattr(args, "jobs", 1),
    )
    failed = 0
    for outcome in outcomes:
        errors = {n: s for n, s in outcome.record["stages"].items() if s["status"] == "error"}
        failed += bool(errors)
        for name, stage in errors.items():
            print(f"qbuild: {outcome.record['id']}: stage {name} failed: {stage['error']['message']}", file=sys.stderr)
    print(f"{len(outcomes)} experiment(s), {failed} with a failed stage (results under {args.results})")
    # A failed stage is a finding (the bit-width sweep expects some), recorded in its results file.
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from qbuild import compare, environment, tuning_db
    from qbuild.plan import build_plan

    if args.rounds < 1 or args.executions < 1:
        raise QbuildError("--rounds and --executions must be at least 1", "pass positive counts")
    tuned = args.target == "cpu" and tuning_db.machine_path().exists()
    kernels = args.kernels or ("tuned" if tuned else "builtin")
    variants = args.variants or list(compare.DEFAULT_BUILDS[args.target])
    experiments = build_plan(
        [args.model], variants, [args.target], "default", args.weights, None, args.dataset, [kernels]
    )
    entries = compare.run(experiments, args.rounds, args.executions, idle=args.idle)
    document = compare.record(args.model, entries, args.rounds, args.executions, environment.capture(), args.idle)
    print(compare.render(document["builds"], document["targets"], document["errors"]))
    if not args.no_save:
        print(f"wrote {compare.save(args.results, document['environment']['machine_id'], document)}")
    return 0


def _cmd_subbyte_kernels(args: argparse.Namespace) -> int:
    from qbuild import environment, subbyte

    if args.rounds < 1 or args.executions < 1:
        raise QbuildError("--rounds and --executions must be at least 1", "pass positive counts")
    timed = subbyte.compare_kernels(rounds=args.rounds, executions=args.executions)
    document = subbyte.record(timed, args.rounds, args.executions, environment.capture())
    print(subbyte.render(document))
    if not args.no_save:
        print(f"wrote {subbyte.save(args.results, document['environment']['machine_id'], document)}")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from qbuild import environment, tune, tuning_db
    from qbuild.models import load_model
    from qbuild.plan import build_plan
    from qbuild.session import ModelSession
    from qbuild.stages import relax_module
    from qbuild.targets import resolve_target

    if args.rounds < 1 or args.executions < 1:
        raise QbuildError("--rounds and --executions must be at least 1", "pass positive counts")
    experiments = build_plan(
        args.models, args.variants, ["cpu"], args.profile, args.weights, None, args.dataset, ["builtin"]
    )
    peers = sorted({e.variant.name for e in experiments if e.variant.engine != "tvm"})
    if peers:
        raise QbuildError(f"{', '.join(peers)}: peer baselines run their own kernels", "tune TVM variants only")
    path = args.output or tuning_db.machine_path()
    previous = tuning_db.load(path) if path.exists() else None  # an unreadable one fails now, not after tuning
    loaded = {}
    modules = []
    session = ModelSession()  # a model's variants share its trace and calibration
    for experiment in experiments:
        if experiment.model not in loaded:
            loaded[experiment.model] = load_model(experiment.model, experiment.weights, experiment.profile.image_size)
        print(f"preparing {experiment.id} ...")
        modules.append(relax_module(experiment, loaded[experiment.model], session))
    target = resolve_target("cpu").tvm_target()
    workloads = tune.workloads_of(modules, target)
    wanted = {
        key: found for key, found in workloads.items() if not (args.missing and previous and key in previous.records)
    }
    print(f"{len(workloads)} conv workloads, {len(wanted)} to tune")
    measured = tune.tune(wanted, target, args.rounds, args.executions)
    env = environment.capture()
    database = tune.to_database(
        measured, previous, env["machine_id"], args.rounds, env, keep=set(workloads) if args.prune else None
    )
    print(tune.render(database))
    print(f"wrote {tuning_db.save(database, path)}")
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from qbuild import profile
    from qbuild.models import load_model
    from qbuild.stages import build

    if args.runs < 1:
        raise QbuildError("--runs must be at least 1", "pass a positive count")
    (experiment,) = _plan(args, many=False)
    if experiment.variant.engine != "tvm":
        raise QbuildError(
            f"variant {experiment.variant.name} is a peer: qbuild generates none of its code",
            "profile a TVM variant (float, int8-a8, ...)",
        )
    loaded = load_model(experiment.model, experiment.weights, experiment.profile.image_size)
    compiled = build(experiment, loaded, cuda_graph=False)
    print(f"{experiment.id}: {args.runs} runs on {experiment.target.device_name}")
    print(profile.render(profile.profile(compiled, loaded.input_shape, args.runs), args.top))
    return 0


def _cmd_layers(args: argparse.Namespace) -> int:
    from qbuild import layer_errors
    from qbuild.models import load_model
    from qbuild.progress import Progress
    from qbuild.stages import layer_errors_of

    (experiment,) = _plan(args, many=False)
    if experiment.variant.config() is None:
        raise QbuildError(
            f"variant {experiment.variant.name} is not quantized: it has no layer errors",
            "pick a quantized variant (int8-a8, int8-a8-calibrated, w4a8, ...)",
        )
    if experiment.dataset is None:
        raise QbuildError(
            "layer errors are measured on labelled images and none were found",
            "pass --dataset DIR (or set QBUILD_DATASET)",
        )
    loaded = load_model(experiment.model, experiment.weights, experiment.profile.image_size)
    measured, layers = layer_errors_of(experiment, loaded, Progress(quiet=args.quiet))
    print(f"{experiment.id} ({loaded.weights.kind} weights)")
    print(layer_errors.render(measured, layers))
    return 0


def _cmd_models() -> int:
    from qbuild.models import EFFICIENTNET_LITE0, get_spec, torchvision_classifiers

    for name in [EFFICIENTNET_LITE0, *torchvision_classifiers()]:
        spec = get_spec(name)
        print(f"{name:<20} input {spec.input_size:>3}  {spec.description}")
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
        if args.command == "models":
            return _cmd_models()
        if args.command == "plan":
            return _cmd_plan(args)
        if args.command == "compare":
            return _cmd_compare(args)
        if args.command == "subbyte-kernels":
            return _cmd_subbyte_kernels(args)
        if args.command == "tune":
            return _cmd_tune(args)
        if args.command == "profile":
            return _cmd_profile(args)
        if args.command == "layers":
            return _cmd_layers(args)
        return _cmd_run(args, many=args.command == "experiments")
    except QbuildError as exc:
        print(f"qbuild: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qbuild: interrupted; results written so far are kept", file=sys.stderr)
        return 130
