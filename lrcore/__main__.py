"""Command line: python -m lrcore {demo,schedule,bench,info}."""
import argparse
import ast
import os
import sys


def parse_assignment(text):
    """key=value, the value a Python literal (number, bool, list, dict) or a bare word."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    words = {"true": True, "false": False}
    if value.lower() in words:
        return key, words[value.lower()]
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


MAX_PRINTED_STEPS = 10**7     # lines `schedule --steps` prints (one float64 array of them)


def schedule_command(parser, args):
    from lrcore import schedules
    if args.name not in schedules.SCHEDULES:
        parser.error(f"unknown schedule {args.name!r}; choose from {', '.join(schedules.SCHEDULES)}")
    kwargs = dict(args.arguments)
    try:                # a bad inner config or huge int is a usage error, never a traceback
        # inner schedules given as serialize() configs
        if args.name == "Warmup" and isinstance(kwargs.get("schedule"), dict):
            kwargs["schedule"] = schedules.deserialize(kwargs["schedule"])
        if args.name == "Sequence" and isinstance(kwargs.get("schedules"), list):
            kwargs["schedules"] = [schedules.deserialize(piece) if isinstance(piece, dict)
                                   else piece for piece in kwargs["schedules"]]
        schedule = schedules.SCHEDULES[args.name](**kwargs)
    except (TypeError, ValueError) as exc:
        parser.error(f"{args.name}: {exc}")
    plots = None
    if args.plot:
        plots = _plots(parser)
        check_output_path(parser, args.plot, directory=False)
    print(f"# {schedule!r}")
    print(f"{'step':>8}  {'lr':>14}")
    import numpy as np
    for step, value in zip(range(args.steps), schedule(np.arange(args.steps))):
        print(f"{step:>8}  {value:>14.8g}")
    if plots:
        try:
            plots.plot_schedule(schedule, max(args.steps, 2), args.plot)
        except OSError as exc:
            parser.error(f"cannot write {args.plot}: {exc.strerror or exc}")
        print(f"# plot: {args.plot}")


def check_output_path(parser, path, directory):
    """Fail with a usage error before any work when `path` cannot be written: a directory
    (created if missing) for `directory`, else a file whose folder exists."""
    folder = path if directory else (os.path.dirname(path) or ".")
    if directory:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            parser.error(f"cannot create directory {path}: {exc.strerror or exc}")
    elif os.path.isdir(path):
        parser.error(f"--plot {path} is a directory; give a file name such as {path}/schedule.png")
    if not os.path.isdir(folder):
        parser.error(f"cannot write {path}: directory {folder} does not exist")
    if not os.access(folder, os.W_OK):
        parser.error(f"cannot write {path}: directory {folder} is not writable")


def _plots(parser):
    """lrcore.plots, or a one-line usage error saying how to install matplotlib."""
    try:
        from lrcore import plots
        plots.pyplot()
    except ImportError as exc:
        parser.error(str(exc))
    return plots


def main(argv=None):
    """Run the command line; a reader that closes the pipe early (`| head`) ends it quietly."""
    try:
        status = run(argv)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        # Python would report the failed flush at exit too: point stdout at devnull first
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def build_parser():
    """The command line's parser and its subcommands' parsers, by name."""
    parser = argparse.ArgumentParser(prog="lrcore", description="lrcore command line")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo_parser = commands.add_parser(
        "demo", help="gradient descent on (w + 1)^2 at several rates, a decaying "
                     "rate, and five optimizers compared")
    demo_parser.add_argument("--plot", metavar="DIR",
                             help="also write PNGs there (needs matplotlib: lrcore[plot])")
    sched = commands.add_parser(
        "schedule", help="print a learning-rate schedule, step by step",
        description="Print NAME's learning rate at steps 0 .. N-1, e.g. "
                    "lrcore schedule CosineDecay initial_learning_rate=0.1 decay_steps=100")
    sched.add_argument("name", metavar="NAME", help="a schedule of lrcore.schedules")
    sched.add_argument("arguments", nargs="*", type=parse_assignment, metavar="key=value",
                       help="the schedule's keyword arguments")
    sched.add_argument("--steps", type=int, default=20, metavar="N", help="steps to print (20)")
    sched.add_argument("--plot", metavar="FILE", help="also draw it to FILE (needs matplotlib)")
    bench = commands.add_parser(
        "bench", help="time one step against numpy, torch and DeepSpeed, side by side",
        description="Print ratio tables (lrcore vs torch.optim and DeepSpeed when installed, "
                    "and vs the memory-bound floor), with progress on stderr.")
    bench.add_argument("--quick", action="store_true", help="small workloads only (seconds)")
    bench.add_argument("--only", nargs="+", metavar="NAME",
                       help="implementations to compare with lrcore, e.g. 'torch fused' DeepSpeed "
                            "bitsandbytes torchao")
    tables = bench.add_mutually_exclusive_group()
    tables.add_argument("--mixed", action="store_true",
                        help="only the mixed-precision table (bfloat16 / grad_scale / clipping)")
    tables.add_argument("--compact", action="store_true",
                        help="only the compact-state tables (state_format bfloat16 / 8bit vs "
                             "float32 and the 8-bit peers; state bytes per parameter)")
    info = commands.add_parser("info", help="print build_info(): version, backend, compiler, ISA, "
                                            "threads")
    return parser, {"demo": demo_parser, "schedule": sched, "bench": bench, "info": info}


def run(argv=None):
    parser, sub = build_parser()
    demo_parser, sched, bench = sub["demo"], sub["schedule"], sub["bench"]
    args = parser.parse_args(argv)
    if args.command == "demo":
        from lrcore import demo
        plots = _plots(demo_parser) if args.plot else None
        if plots:
            check_output_path(demo_parser, args.plot, directory=True)
        runs = demo.run()
        if plots:
            try:
                for path in plots.plot_demo(args.plot, runs):
                    print(f"plot: {path}")
            except OSError as exc:
                demo_parser.error(f"cannot write pictures to {args.plot}: {exc.strerror or exc}")
    elif args.command == "schedule":
        if not 0 <= args.steps <= MAX_PRINTED_STEPS:
            sched.error(f"--steps must be from 0 to {MAX_PRINTED_STEPS}, got {args.steps}")
        schedule_command(sched, args)
    elif args.command == "bench":
        from lrcore import bench as bench_module
        choices = tuple(bench_module.IMPLEMENTATIONS) + bench_module.EIGHT_BIT_PEERS
        unknown = set(args.only or ()) - set(choices)
        if unknown:
            bench.error(f"unknown implementations {sorted(unknown)}; choose from "
                        f"{', '.join(choices)}")
        if args.mixed:
            bench_module.print_mixed_table(
                [name for name in bench_module.selected(args.only)
                 if name in bench_module.IMPLEMENTATIONS], quick=args.quick)
        elif args.compact:
            bench_module.print_compact_table(bench_module.selected(args.only), quick=args.quick)
        else:
            bench_module.report(quick=args.quick, only=args.only)
    elif args.command == "info":
        import lrcore
        for key, value in lrcore.build_info().items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
