"""The ``smokedet`` command line: arguments, exit codes and progress bars.

Exit codes: 0 when the command did all it was asked, 1 when some input failed,
2 on usage errors (argparse's own code for bad arguments).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

logger = logging.getLogger("detector")


class UsageError(Exception):
    """Arguments that parse but cannot be used together or point at nothing usable."""


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * verbosity
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("detector").setLevel(max(logging.INFO - 10 * max(verbosity - 1, 0), logging.DEBUG))


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    from detector.model import DEFAULT_WEIGHTS

    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="model file (.pt or exported); default: %(default)s")
    parser.add_argument("--device", default="auto", help="auto (CUDA with fp16 when present, else CPU), cpu, cuda or cuda:N")
    parser.add_argument("--imgsz", type=int, default=416, help="inference image size in pixels; default: %(default)s")
    parser.add_argument(
        "--conf", type=float, default=None, help="detection confidence threshold (0-1); default: the model card's"
    )
    parser.add_argument("--threads", type=int, default=0, help="PyTorch CPU threads; 0 uses every core")


def _add_scan_command(commands: argparse._SubParsersAction) -> None:
    from detector.scan import add_scan_arguments, run_scan_command

    parser = commands.add_parser("scan", help="scan video files and write per-video smoking event reports")
    add_scan_arguments(parser)
    _add_model_arguments(parser)
    parser.set_defaults(handler=run_scan_command)


def _add_watch_command(commands: argparse._SubParsersAction) -> None:
    """Register ``smokedet watch`` (live monitoring)."""
    from detector.watch import add_watch_arguments, run_watch_command

    parser = commands.add_parser(
        "watch", help="watch webcams, streams or looping files live and raise alerts when someone smokes"
    )
    add_watch_arguments(parser)
    _add_model_arguments(parser)
    parser.set_defaults(handler=run_watch_command)


def _add_training_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``smokedet data``, ``train``, ``eval`` and ``export``."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smokedet", description="Find smoking in images, videos and live streams.")
    parser.add_argument("-v", "--verbose", action="count", default=1, help="more log output (repeat for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_scan_command(commands)
    _add_watch_command(commands)
    _add_training_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    _configure_logging(0 if arguments.quiet else arguments.verbose)
    try:
        return int(arguments.handler(arguments))
    except UsageError as error:
        parser.error(str(error))  # Exits with EXIT_USAGE.
    except KeyboardInterrupt:
        logger.warning("interrupted; files written so far are kept")
        return 130
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
