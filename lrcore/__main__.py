"""Command line: python -m lrcore demo."""
import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="lrcore", description="lrcore command line")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("demo", help="run the seed experiments: SGD on (w + 1)^2 at several rates")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from lrcore import demo
        demo.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
