"""The ``smokedet`` command line: arguments, exit codes and progress bars.

Exit codes: 0 when the command did all it was asked, 1 when some input failed,
2 on usage errors (argparse's own code for bad arguments).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence

from detector.options import fraction_up_to_one, integer_at_least, non_negative_number

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

logger = logging.getLogger("detector")


class UsageError(Exception):
    """Arguments that parse but cannot be used together or point at nothing usable."""


def _configure_logging(verbosity: int) -> None:
    """Set log levels: 0 shows warnings and errors, 1 (the default) adds our info lines, 2 and more add debug."""
    level = logging.WARNING - 10 * verbosity
    # Timestamps matter most to `smokedet watch`, which runs for days; every command gets them for one format.
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    project_level = logging.WARNING if verbosity <= 0 else max(logging.INFO - 10 * (verbosity - 1), logging.DEBUG)
    logging.getLogger("detector").setLevel(project_level)
    if verbosity <= 0:
        # Ultralytics sets its own logger's level when imported, from YOLO_VERBOSE, which also hides its progress bars.
        os.environ["YOLO_VERBOSE"] = "False"
        logging.getLogger("ultralytics").setLevel(logging.WARNING)


# Defaults of `smokedet train` options that a resumed run ignores; see _run_train.
TRAIN_DEFAULTS = {"model": "yolov9t.yaml", "epochs": 10, "imgsz": 416, "batch": 16}


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    from detector.model import DEFAULT_CONFIDENCE, DEFAULT_WEIGHTS

    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="model file (.pt or exported); default: %(default)s")
    parser.add_argument("--device", default="auto", help="auto (CUDA with fp16 when present, else CPU), cpu, cuda or cuda:N")
    parser.add_argument("--imgsz", type=int, default=416, help="inference image size in pixels; default: %(default)s")
    parser.add_argument(
        "--conf",
        type=float,
        default=None,
        help=f"detection confidence threshold (0-1); default: {DEFAULT_CONFIDENCE}, chosen for the shipped model in its card",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="PyTorch CPU threads; 0 uses every core but one, left for video decoding"
    )


def _add_scan_command(commands: argparse._SubParsersAction) -> None:
    from detector.scan import add_scan_arguments, run_scan_command

    parser = commands.add_parser("scan", help="scan video files and write per-video smoking event reports")
    add_scan_arguments(parser)
    _add_model_arguments(parser)
    parser.set_defaults(handler=run_scan_command, command_parser=parser)


def _add_watch_command(commands: argparse._SubParsersAction) -> None:
    """Register ``smokedet watch`` (live monitoring)."""
    from detector.watch import add_watch_arguments, run_watch_command

    parser = commands.add_parser(
        "watch", help="watch webcams, streams or looping files live and raise alerts when someone smokes"
    )
    add_watch_arguments(parser)
    _add_model_arguments(parser)
    parser.set_defaults(handler=run_watch_command, command_parser=parser)


def _add_training_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``smokedet data``, ``train``, ``eval`` and ``export``."""
    from detector.model import DEFAULT_CONFIDENCE

    data = commands.add_parser("data", help="download and check YOLO datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")

    pull = data_commands.add_parser(
        "pull", help="download a Roboflow dataset version; the API key comes from the ROBOFLOW_API_KEY environment variable"
    )
    pull.add_argument("--workspace", required=True, help="Roboflow workspace id (the URL slug)")
    pull.add_argument("--project", required=True, help="Roboflow project id (the URL slug)")
    pull.add_argument("--version", required=True, type=int, help="dataset version number")
    pull.add_argument("--format", default="yolov9", help="Roboflow export format; default: %(default)s")
    pull.add_argument("--out", default=None, help="folder to create for the dataset; default: data/<project>-<version>")
    pull.set_defaults(handler=_run_data_pull, command_parser=pull)

    check = data_commands.add_parser("check", help="check a YOLO dataset for problems that make training drop or misread images")
    check.add_argument("dataset", help="dataset folder containing data.yaml, or the yaml file")
    check.add_argument("--max-warnings", type=integer_at_least(0), default=20, help="warnings to list (0 lists all); default: %(default)s")
    check.add_argument("--workers", type=integer_at_least(0), default=0, help="threads that read images; 0 uses every core")
    check.set_defaults(handler=_run_data_check, command_parser=check)

    train = commands.add_parser("train", help="train a detector offline and publish its stripped weights with a model card")
    # Options a resumed run takes from its own records default to None, so that _run_train can warn when they are given.
    train.add_argument("--data", default=None, help="dataset folder or data.yaml of a YOLO dataset; required unless --resume")
    train.add_argument(
        "--model", default=None, help=f"architecture .yaml (untrained start) or .pt checkpoint; default: {TRAIN_DEFAULTS['model']}"
    )
    train.add_argument("--epochs", type=integer_at_least(1), default=None, help=f"training epochs; default: {TRAIN_DEFAULTS['epochs']}")
    train.add_argument(
        "--imgsz", type=integer_at_least(32), default=None, help=f"training image size in pixels; default: {TRAIN_DEFAULTS['imgsz']}"
    )
    train.add_argument("--batch", type=integer_at_least(1), default=None, help=f"images per batch; default: {TRAIN_DEFAULTS['batch']}")
    train.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    _add_schedule_arguments(train)
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run at <project>/<name> from its last.pt, with the data, model and schedule it started with",
    )
    train.add_argument("--threads", type=integer_at_least(0), default=0, help="PyTorch CPU threads; 0 uses every core")
    train.add_argument("--workers", type=integer_at_least(0), default=2, help="data loader processes; default: %(default)s")
    train.add_argument("--name", default="cigarette", help="run name, also the default weights name; default: %(default)s")
    train.add_argument("--project", default="runs/train", help="folder for run folders; default: %(default)s")
    train.add_argument("--output", default=None, help="where to write the stripped best weights; default: weights/<name>.pt")
    train.set_defaults(handler=_run_train, command_parser=train)

    evaluate = commands.add_parser("eval", help="measure precision, recall and mAP on a dataset split")
    evaluate.add_argument("--weights", required=True, help="model file (.pt or exported)")
    evaluate.add_argument("--data", required=True, help="dataset folder or data.yaml")
    evaluate.add_argument("--split", default="test", choices=["train", "val", "valid", "test"], help="default: %(default)s")
    evaluate.add_argument(
        "--conf",
        type=float,
        default=None,
        help=f"confidence threshold for the image-level table (0-1); default: {DEFAULT_CONFIDENCE}, the shipped model's",
    )
    evaluate.add_argument("--imgsz", type=integer_at_least(32), default=416, help="image size in pixels; default: %(default)s")
    evaluate.add_argument("--batch", type=integer_at_least(1), default=16, help="images per batch; default: %(default)s")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    evaluate.add_argument("--workers", type=integer_at_least(0), default=2, help="data loader processes; default: %(default)s")
    evaluate.add_argument("--json", action="store_true", help="print the results as JSON")
    evaluate.set_defaults(handler=_run_eval, command_parser=evaluate)

    export = commands.add_parser("export", help="export PyTorch weights to ONNX, OpenVINO or TensorRT")
    export.add_argument("--weights", required=True, help="PyTorch .pt weights")
    export.add_argument("--format", required=True, choices=["onnx", "openvino", "engine"], help="engine is TensorRT (CUDA only)")
    export.add_argument(
        "--imgsz", type=integer_at_least(32), default=416, help="export image size in pixels, same as inference; default: %(default)s"
    )
    export.add_argument("--half", action="store_true", help="fp16 weights (onnx and engine need a CUDA GPU)")
    export.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    export.add_argument("--out", default=None, help="exported file or folder to write; default: beside the weights")
    export.set_defaults(handler=_run_export, command_parser=export)


def _fail(message: str) -> int:
    print(f"smokedet: error: {message}", file=sys.stderr)
    return EXIT_FAILED


def _run_data_pull(arguments: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from detector.data import DataError, pull_dataset

    api_key = os.environ.get("ROBOFLOW_API_KEY", "").strip()
    if not api_key:
        raise UsageError("missing Roboflow API key: set the ROBOFLOW_API_KEY environment variable")
    try:
        folder = pull_dataset(
            api_key=api_key,
            workspace=arguments.workspace,
            project=arguments.project,
            version=arguments.version,
            export_format=arguments.format,
            output=None if arguments.out is None else Path(arguments.out),
        )
    except DataError as error:
        return _fail(str(error))
    print(folder)
    return EXIT_OK


def _run_data_check(arguments: argparse.Namespace) -> int:
    from pathlib import Path

    from detector.data import DataError, check_dataset

    if not Path(arguments.dataset).exists():
        raise UsageError(f"dataset {arguments.dataset!r} not found: pass a dataset folder with a data.yaml, or the yaml itself")
    try:
        report = check_dataset(Path(arguments.dataset), workers=arguments.workers or None)
    except DataError as error:
        return _fail(str(error))

    print(_format_check_table(report))
    errors, warnings = report.errors, report.warnings
    for problem in errors:
        print(f"error: {problem.location()}: {problem.message}")
    listed = warnings if arguments.max_warnings <= 0 else warnings[: arguments.max_warnings]
    for problem in listed:
        print(f"warning: {problem.location()}: {problem.message}")
    if len(listed) < len(warnings):
        print(f"... {len(warnings) - len(listed)} more warnings (--max-warnings 0 lists all)")
    if errors:
        return _fail(f"{len(errors)} problem(s) in {report.layout.yaml_path} make Ultralytics drop or misread images; fix them first")
    return EXIT_OK


def _format_check_table(report) -> str:
    headers = ["split", "images", "labelled", "empty", "no label", "boxes", "problems", "warnings"]
    rows = [
        [split, c.images, c.labelled, c.empty, c.missing_labels, c.boxes, c.errors, c.warnings]
        for split, c in report.splits.items()
    ]
    widths = [max(len(str(value)) for value in column) for column in zip(headers, *rows)]
    lines = []
    for row in [headers, *rows]:
        cells = [str(row[0]).ljust(widths[0])] + [str(value).rjust(width) for value, width in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def _add_schedule_arguments(train: argparse.ArgumentParser) -> None:
    """Register the optimizer and learning-rate options, whose defaults depend on the --model start."""
    from detector.training import FINE_TUNE_SCHEDULE, OPTIMIZERS, SCRATCH_SCHEDULE

    scratch, fine_tune = SCRATCH_SCHEDULE, FINE_TUNE_SCHEDULE
    schedule = train.add_argument_group(
        "schedule",
        "Defaults differ by start: a .yaml model trains from scratch, a .pt checkpoint is fine-tuned.",
    )
    schedule.add_argument(
        "--optimizer", choices=OPTIMIZERS, default=None, help=f"default: {scratch.optimizer} (auto lets Ultralytics choose)"
    )
    schedule.add_argument(
        "--lr0", type=fraction_up_to_one, default=None, help=f"initial learning rate; default: {scratch.lr0} from scratch, {fine_tune.lr0} fine-tuning"
    )
    schedule.add_argument(
        "--lrf",
        type=fraction_up_to_one,
        default=None,
        help=f"final learning rate as a fraction of --lr0; default: {scratch.lrf} from scratch, {fine_tune.lrf} fine-tuning",
    )
    schedule.add_argument(
        "--warmup-epochs",
        type=non_negative_number,
        default=None,
        help=f"learning-rate warm-up in epochs; default: {scratch.warmup_epochs:g} from scratch, {fine_tune.warmup_epochs:g} fine-tuning",
    )
    schedule.add_argument(
        "--close-mosaic",
        type=integer_at_least(0),
        default=None,
        help=f"turn mosaic augmentation off for this many final epochs; default: {scratch.close_mosaic} from scratch, "
        "every epoch (mosaic off) fine-tuning",
    )


def _run_train(arguments: argparse.Namespace) -> int:
    from pathlib import Path

    from detector.model import ModelError
    from detector.training import (
        TrainingError,
        TrainSettings,
        check_new_run_folder,
        check_output_path,
        check_writable_location,
        publish_run,
        train,
    )

    if arguments.resume:
        _warn_ignored_on_resume(arguments)
    elif arguments.data is None:
        raise UsageError("--data is required to start a run: pass a dataset folder or its data.yaml")
    if arguments.data is not None and not Path(arguments.data).exists():
        raise UsageError(f"dataset {arguments.data!r} not found: pass --data with a dataset folder or its data.yaml")
    if not arguments.name.strip() or Path(arguments.name).name != arguments.name:
        raise UsageError(f"invalid --name {arguments.name!r}: use a plain folder name such as cigarette-v2")
    output = Path(arguments.output) if arguments.output else Path("weights") / f"{arguments.name}.pt"
    if output.exists() and not arguments.resume:
        raise UsageError(f"output {str(output)!r} already exists; pass another --output or --name, or delete it first")
    run_dir = Path(arguments.project) / arguments.name
    try:
        check_output_path(output)
        check_writable_location(run_dir / "weights" / "last.pt", label="run folder file")
        if not arguments.resume:
            check_new_run_folder(run_dir)
    except TrainingError as error:
        raise UsageError(str(error)) from error

    explicit = {key: getattr(arguments, key) for key in TRAIN_DEFAULTS}
    settings = TrainSettings(
        data=Path(arguments.data or "."),  # A resumed run reads its data from the run folder instead.
        **{key: default if explicit[key] is None else explicit[key] for key, default in TRAIN_DEFAULTS.items()},
        device=arguments.device,
        resume=arguments.resume,
        project=Path(arguments.project),
        name=arguments.name,
        threads=arguments.threads,
        workers=arguments.workers,
        optimizer=arguments.optimizer,
        lr0=arguments.lr0,
        lrf=arguments.lrf,
        warmup_epochs=arguments.warmup_epochs,
        close_mosaic=arguments.close_mosaic,
    )
    try:
        result = train(settings)
        weights, card = publish_run(result, settings, output)
    except (TrainingError, ModelError) as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        run = shlex.join(["--project", arguments.project, "--name", arguments.name])
        logger.warning("training interrupted; its last finished epoch is kept: continue with smokedet train --resume %s", run)
        raise
    print(f"weights: {weights}\nmodel card: {card}")
    return EXIT_OK


def _warn_ignored_on_resume(arguments: argparse.Namespace) -> None:
    """Log a warning naming the options given with --resume that the resumed run does not use."""
    options = ["data", *TRAIN_DEFAULTS, "optimizer", "lr0", "lrf", "warmup_epochs", "close_mosaic"]
    ignored = ["--" + option.replace("_", "-") for option in options if getattr(arguments, option) is not None]
    if ignored:
        logger.warning(
            "--resume continues with the data, model and schedule the run started with; ignoring %s", ", ".join(ignored)
        )


def _run_eval(arguments: argparse.Namespace) -> int:
    import contextlib
    import json
    from pathlib import Path

    from detector.model import DEFAULT_CONFIDENCE, ModelError
    from detector.training import TrainingError, evaluate

    if not Path(arguments.weights).exists():
        raise UsageError(f"weights {arguments.weights!r} not found: pass --weights with a .pt or exported model file")
    if not Path(arguments.data).exists():
        raise UsageError(f"dataset {arguments.data!r} not found: pass --data with a dataset folder or its data.yaml")
    confidence = DEFAULT_CONFIDENCE if arguments.conf is None else arguments.conf
    if not 0.0 <= confidence <= 1.0:
        raise UsageError(f"--conf must be within [0, 1], got {confidence}")
    try:
        with _StdoutToStderr() if arguments.json else contextlib.nullcontext():
            report = evaluate(
                weights=Path(arguments.weights),
                data=Path(arguments.data),
                split=arguments.split,
                confidence=confidence,
                imgsz=arguments.imgsz,
                batch=arguments.batch,
                device=arguments.device,
                workers=arguments.workers,
            )
    except (TrainingError, ModelError) as error:
        return _fail(str(error))
    if arguments.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(_format_eval_tables(report))
    return EXIT_OK


class _StdoutToStderr:
    """Send Ultralytics' stdout output (log lines, progress bars) to stderr, so stdout holds only JSON."""

    def __enter__(self) -> None:
        import contextlib

        import ultralytics.utils  # noqa: F401 - creates the "ultralytics" log handler that writes to stdout.

        self._handlers = [
            handler
            for handler in logging.getLogger("ultralytics").handlers
            if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.__stdout__)
        ]
        self._streams = [handler.setStream(sys.stderr) for handler in self._handlers]
        self._redirect = contextlib.redirect_stdout(sys.stderr)
        self._redirect.__enter__()

    def __exit__(self, *exc_info) -> None:
        self._redirect.__exit__(*exc_info)
        for handler, stream in zip(self._handlers, self._streams):
            handler.setStream(stream)


def _format_eval_tables(report) -> str:
    metric_rows = [["all", report.metrics]] + [[source, metrics] for source, metrics in report.source_metrics.items()]
    lines = [f"{report.weights} on the {report.split} split of {report.data}", ""]
    lines.append(f"{'subset':<20} {'images':>7} {'precision':>9} {'recall':>7} {'mAP50':>7} {'mAP50-95':>8}")
    for name, m in metric_rows:
        lines.append(f"{name:<20} {m.images:>7} {m.precision:>9.3f} {m.recall:>7.3f} {m.map50:>7.3f} {m.map50_95:>8.3f}")

    outcome_rows = [["all", report.outcomes]] + [[source, o] for source, o in report.source_outcomes.items()]
    lines += ["", f"Images at confidence {report.confidence:g} (any detection on an image counts):"]
    lines.append(f"{'subset':<20} {'found':>7} {'missed':>7} {'clean':>7} {'false alarm':>11}")
    for name, o in outcome_rows:
        lines.append(
            f"{name:<20} {o.positives_found:>7} {o.positives_missed:>7} {o.negatives_clean:>7} {o.negatives_false_alarm:>11}"
        )
    lines.append("found/missed: images with a labelled cigarette; clean/false alarm: images without one")
    return "\n".join(lines)


def _run_export(arguments: argparse.Namespace) -> int:
    from pathlib import Path

    from detector.model import ModelError
    from detector.training import TrainingError, export_model

    if not Path(arguments.weights).is_file():
        raise UsageError(f"weights {arguments.weights!r} not found: pass --weights with a .pt file")
    try:
        exported = export_model(
            weights=Path(arguments.weights),
            export_format=arguments.format,
            imgsz=arguments.imgsz,
            half=arguments.half,
            device=arguments.device,
            output=None if arguments.out is None else Path(arguments.out),
        )
    except (TrainingError, ModelError) as error:
        return _fail(str(error))
    print(exported)
    return EXIT_OK


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
        # The failing command's parser prints its own usage line, such as "smokedet train ...".
        arguments.command_parser.error(str(error))  # Exits with EXIT_USAGE.
    except KeyboardInterrupt:
        logger.warning("interrupted; files written so far are kept")
        return 130
    return EXIT_OK


if __name__ == "__main__":
    # Run through the imported module, so exception classes such as UsageError are the ones
    # the command modules raise (running this file directly would define a second copy).
    from detector.cli import main as package_main

    sys.exit(package_main())
