"""The `skserve` command: subcommands, each a module with `add_arguments(parser)` and `run(args)`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Protocol, cast


class Command(Protocol):
    """What a subcommand's module provides."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


# Subcommand -> (its module, its one-line help); a new subcommand is a module with the two
# functions of Command and a line here. Only the module of the subcommand being run is imported:
# `skserve serve` must import nothing before gunicorn reads skserve.gunicorn_config.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": (__name__, "Serve the model in MODEL_DIR over HTTP with gunicorn"),
    "package": ("skserve.packaging", "Write the artifact pair for an estimator fitted elsewhere"),
    "score": ("skserve.bulk", "Score a CSV of any length into a predictions CSV"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: run the subcommand named first on the command line; its exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="skserve", description="Serve one scikit-learn model over HTTP.")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        subparser = subcommands.add_parser(name, help=summary, description=summary)
        if arguments[:1] == [name]:
            _command(module).add_arguments(subparser)
    args = parser.parse_args(arguments)
    return _command(COMMANDS[args.command][0]).run(args)


def _command(module: str) -> Command:
    return cast(Command, importlib.import_module(module))


# --- skserve serve ----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model_dir",
        nargs="?",
        metavar="MODEL_DIR",
        help="the directory holding model.joblib and model.json (default: $MODEL_DIR, else models)",
    )
    parser.epilog = (
        "Environment: PORT (8000), WEB_CONCURRENCY (one worker per usable CPU), SKSERVE_THREADS, "
        "SKSERVE_* settings (README); GUNICORN_CMD_ARGS passes further options to gunicorn."
    )


def run(args: argparse.Namespace) -> int:
    """Become the gunicorn master with skserve's settings, in this process: signals reach gunicorn."""
    if args.model_dir is not None:
        os.environ["MODEL_DIR"] = args.model_dir
    # Imported here, where it is needed: the other subcommands have no use for gunicorn.
    from gunicorn.app.wsgiapp import WSGIApplication  # type: ignore[import-untyped]  # noqa: PLC0415

    # gunicorn reads its own command line from sys.argv.
    sys.argv = ["skserve serve", "--config", "python:skserve.gunicorn_config"]
    WSGIApplication("%(prog)s").run()
    return 0  # not reached: gunicorn's master ends the process itself (status 1 if the model cannot load)
