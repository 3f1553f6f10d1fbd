"""Train, evaluate and export wrappers over Ultralytics that never download anything."""

from __future__ import annotations

import csv
import errno
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from detector.threads import set_torch_threads

logger = logging.getLogger(__name__)

# Ultralytics downloads any weights file whose name matches one of its release assets. Every
# name of the YOLO and RT-DETR families is rejected, because new releases add assets to them.
# Other families are matched by exact asset name, so that names like "sample.pt" stay usable.
RELEASE_NAME_PREFIXES = ("yolo", "rtdetr")


class TrainingError(RuntimeError):
    """Training, evaluation or export could not start or finish."""


@dataclass(frozen=True)
class TrainSettings:
    """Settings for one training run; names follow Ultralytics' train arguments."""

    data: Path
    model: str
    epochs: int = 10
    imgsz: int = 416
    batch: int = 16
    device: str = "auto"
    resume: bool = False
    project: Path = Path("runs/train")
    name: str = "cigarette"
    threads: int = 0
    # None picks the value of the schedule that suits the start: see schedule_for().
    optimizer: str | None = None
    lr0: float | None = None
    lrf: float | None = None
    warmup_epochs: float | None = None
    close_mosaic: int | None = None
    patience: int = 50
    seed: int = 0
    workers: int = 2
    fraction: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Schedule:
    """Optimizer and learning-rate schedule of a run, in Ultralytics' argument names."""

    optimizer: str
    lr0: float
    lrf: float  # The final learning rate as a fraction of lr0, reached by linear decay.
    warmup_epochs: float
    close_mosaic: int  # Mosaic augmentation is off for this many final epochs.


# Ultralytics' default schedule with SGD in place of optimizer=auto, for an untrained model built from a .yaml.
SCRATCH_SCHEDULE = Schedule(optimizer="SGD", lr0=0.01, lrf=0.01, warmup_epochs=3.0, close_mosaic=10)

# For a checkpoint that is already trained: a tenth of the scratch learning rate, no
# warm-up and no mosaic. Ultralytics' warm-up starts the bias learning rate at 0.1, and
# optimizer=auto picks AdamW for runs under 10,000 iterations. On the cigarettes dataset
# AdamW with that warm-up set a trained YOLOv9t back (validation mAP50 0.096 fell to
# 0.040), while this schedule raised it to 0.135 in two epochs.
FINE_TUNE_SCHEDULE = Schedule(optimizer="SGD", lr0=0.001, lrf=0.5, warmup_epochs=0.0, close_mosaic=0)

OPTIMIZERS = ("SGD", "MuSGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSprop", "auto")


def is_architecture(model: str) -> bool:
    """Return True when ``model`` names an architecture .yaml, which builds an untrained model."""
    return Path(model).suffix.lower() in {".yaml", ".yml"}


def schedule_for(settings: TrainSettings) -> Schedule:
    """Fill the schedule values left as None in ``settings`` from the scratch or the fine-tune schedule.

    Fine-tuning keeps mosaic off for the whole run unless close_mosaic is given.
    """
    base = SCRATCH_SCHEDULE if is_architecture(settings.model) else FINE_TUNE_SCHEDULE
    close_mosaic = base.close_mosaic if is_architecture(settings.model) else settings.epochs
    chosen = Schedule(
        optimizer=settings.optimizer if settings.optimizer is not None else base.optimizer,
        lr0=settings.lr0 if settings.lr0 is not None else base.lr0,
        lrf=settings.lrf if settings.lrf is not None else base.lrf,
        warmup_epochs=settings.warmup_epochs if settings.warmup_epochs is not None else base.warmup_epochs,
        close_mosaic=settings.close_mosaic if settings.close_mosaic is not None else close_mosaic,
    )
    if not (0 < chosen.lr0 <= 1 and 0 < chosen.lrf <= 1):
        raise TrainingError(f"invalid learning rate lr0={chosen.lr0}, lrf={chosen.lrf}: both must be in (0, 1]")
    if not (0 <= chosen.warmup_epochs < math.inf and chosen.close_mosaic >= 0):
        raise TrainingError(
            f"invalid warmup_epochs={chosen.warmup_epochs} or close_mosaic={chosen.close_mosaic}: use 0 or more epochs"
        )
    return chosen


def check_run_size(settings: TrainSettings) -> None:
    """Raise TrainingError for epoch, image size or batch values that Ultralytics would reject or silently change."""
    if settings.epochs < 1:
        raise TrainingError(f"invalid epochs={settings.epochs}: train for 1 or more epochs")
    if settings.imgsz < 32:
        raise TrainingError(f"invalid imgsz={settings.imgsz}: use 32 pixels or more, a multiple of 32 such as 416")
    if settings.batch < 1:
        raise TrainingError(f"invalid batch={settings.batch}: use 1 or more images per batch")


# Written into a run folder when a run starts: the settings it was started with.
RUN_SETTINGS_FILE = "smokedet-settings.json"


@dataclass(frozen=True)
class TrainResult:
    """Paths of the files a finished (or interrupted) run left."""

    run_dir: Path
    best: Path
    last: Path
    results_csv: Path


def is_release_asset_name(path: Path | str) -> bool:
    """Return True when a file name is, or could be, an Ultralytics release asset that it would download."""
    from ultralytics.utils.downloads import GITHUB_ASSETS_STEMS

    name = Path(path).name.lower()
    stem = name.rpartition(".")[0] if "." in name else name
    return name.startswith(RELEASE_NAME_PREFIXES) or stem in {asset.lower() for asset in GITHUB_ASSETS_STEMS}


def _reject_release_asset_name(path: Path, role: str, fix: str) -> None:
    if is_release_asset_name(path):
        raise TrainingError(
            f"{role} {str(path)!r} is named like an Ultralytics release asset, which makes Ultralytics try to "
            f"download it when loaded; {fix}"
        )


def check_model_name(model: str) -> None:
    """Raise TrainingError for a missing checkpoint or an official asset name that would trigger a download."""
    path = Path(model)
    if is_architecture(model):
        return  # An architecture config builds an untrained model, which downloads nothing.
    if not path.is_file():
        raise TrainingError(f"model {model!r} not found: pass an existing .pt checkpoint or a .yaml architecture")
    if path.suffix != ".pt":
        raise TrainingError(f"model {model!r} is neither a .pt checkpoint nor a .yaml architecture")
    _reject_release_asset_name(path, "model", "rename the file (for example to cigarette-<name>.pt)")


def check_output_path(output: Path) -> None:
    """Raise TrainingError unless ``output`` can take published weights: a writable .pt path with a safe name.

    Runs before training, so that a bad path does not surface only after hours of it.
    """
    output = Path(output)
    if output.suffix != ".pt":
        raise TrainingError(f"output {str(output)!r} must end in .pt: its model card is written beside it as .md")
    _reject_release_asset_name(output, "output", "choose another --output or --name (for example cigarette-<name>)")
    if output.is_dir():
        raise TrainingError(f"output {str(output)!r} is a folder: pass a file path ending in .pt")
    check_writable_location(output)


def check_writable_location(path: Path, label: str = "output") -> None:
    """Raise TrainingError unless ``path`` could be created, without creating anything.

    The nearest existing parent folder must take a scratch file: permission bits alone
    do not cover read-only mounts, /proc or a root user.
    """
    folder = Path(path).absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        if not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{folder} is a file")
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise TrainingError(f"{label} {str(path)!r} cannot be written ({error.strerror or error}); choose another folder") from error


def load_yolo(source: str | Path, role: str) -> Any:
    """Load a model with Ultralytics, raising TrainingError with one line for files it cannot read."""
    from ultralytics import YOLO

    try:
        return YOLO(str(source), task="detect")
    except Exception as error:  # Ultralytics raises many types for unreadable or wrong files.
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if isinstance(error, KeyError):
            reason = f"missing key {reason}"  # A .yaml that is not a model architecture, such as a data.yaml.
        raise TrainingError(
            f"{role} {str(source)!r} could not be loaded ({reason}); pass an Ultralytics detection checkpoint (.pt) "
            "or a model .yaml such as yolov9t.yaml"
        ) from error


def check_training_data(data: Path) -> Any:
    """Return the layout of a dataset fit to train on: train and val splits that exist, and class names.

    Raises TrainingError otherwise, before Ultralytics would fail with a traceback or
    run the data.yaml's ``download`` entry (a URL, shell or Python code) to fetch a
    missing split.
    """
    from detector.data import DataError, find_data_yaml, load_layout

    try:
        yaml_path = find_data_yaml(Path(data))
        layout = load_layout(yaml_path)
    except DataError as error:
        raise TrainingError(str(error)) from error
    missing = [split for split in ("train", "val") if split not in layout.splits]
    if missing:
        raise TrainingError(f"{yaml_path} has no {' or '.join(missing)} split, and training needs both")
    if not layout.names:
        raise TrainingError(f"{yaml_path} lists no class names; add them, for example names: ['cigarette']")
    for split in ("train", "val"):
        for source in layout.splits[split]:
            if not source.exists():
                raise TrainingError(
                    f"{yaml_path}: {split} path {source} not found; fix the path or run `smokedet data check` on it"
                )
    return layout


def write_training_yaml(layout: Any, folder: Path) -> Path:
    """Write a data.yaml for Ultralytics with the layout's absolute split paths and no ``download`` entry.

    Training reads this copy, so Ultralytics resolves paths the way `smokedet data check`
    does, and never runs a download.
    """
    import yaml

    content: dict[str, Any] = {"path": str(layout.root)}
    for split, sources in layout.splits.items():
        paths = [str(source) for source in sources if source.exists()]  # A missing test split is left out.
        if paths:
            content[split] = paths[0] if len(paths) == 1 else paths
    content["names"] = dict(layout.names)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "data.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
    return path


def check_new_run_folder(run_dir: Path) -> None:
    """Raise TrainingError when ``run_dir`` already has weights, which a new run would overwrite."""
    last = Path(run_dir) / "weights" / "last.pt"
    if not last.is_file():
        return
    if _is_resumable(load_yolo(last, "checkpoint")):
        raise TrainingError(
            f"run folder {run_dir} already has weights of an interrupted run; continue it with --resume, "
            "or pass another --name"
        )
    raise TrainingError(
        f"run folder {run_dir} already has the weights of a finished run; pass another --name "
        f"(and --model {last.with_name('best.pt')} to fine-tune them)"
    )


def _is_resumable(model: Any) -> bool:
    """Return True when a loaded checkpoint still has the optimizer state and epoch of an unfinished run.

    A finished run's last.pt has no optimizer state and epoch -1.
    """
    checkpoint = getattr(model, "ckpt", None) or {}
    return checkpoint.get("epoch", -1) >= 0 and checkpoint.get("optimizer") is not None


def check_resumable(model: Any, last: Path) -> None:
    """Raise TrainingError unless ``last`` is a checkpoint that Ultralytics can resume.

    For a finished run, Ultralytics would start a new run on its default dataset
    instead, which it tries to download.
    """
    if not _is_resumable(model):
        raise TrainingError(
            f"cannot resume: the run of {last} already finished; fine-tune its weights in a new run with "
            f"--model {last.with_name('best.pt')} --name <new name>"
        )


def _check_resume_data(run_dir: Path) -> None:
    """Raise TrainingError when the dataset that a run started with has moved or is gone."""
    import yaml

    args_file = run_dir / "args.yaml"
    if not args_file.is_file():
        return  # Ultralytics then reads the arguments from the checkpoint itself.
    data = (yaml.safe_load(args_file.read_text(encoding="utf-8")) or {}).get("data")
    if data:
        try:
            check_training_data(Path(data))
        except TrainingError as error:
            raise TrainingError(f"cannot resume {run_dir}: its dataset is no longer usable: {error}") from error


def _check_amp_offline(original: Any) -> Any:
    """Wrap Ultralytics' AMP check so that it never downloads YOLO26n weights.

    Ultralytics 8.4 compares fp32 and AMP outputs of YOLO26n, downloading it first. When
    the file is absent this keeps AMP on for CUDA, which is what Ultralytics falls back to
    when the download fails.
    """

    # NOTE: the CUDA branch has run only in a test with a stand-in CUDA device, not on a GPU.
    def check_amp(model: Any) -> bool:
        from ultralytics.utils import WEIGHTS_DIR

        if (Path(WEIGHTS_DIR) / "yolo26n.pt").is_file():
            return original(model)
        device = next(model.parameters()).device
        logger.info("AMP check skipped because it needs yolo26n.pt, which is not downloaded offline")
        return device.type == "cuda"

    check_amp.skips_download = True
    return check_amp


def train(settings: TrainSettings) -> TrainResult:
    """Train (or resume) a YOLO detector and return the run's weight files."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics.engine import trainer as trainer_module

    from detector.model import resolve_device

    run_dir = Path(settings.project).resolve() / settings.name
    last = run_dir / "weights" / "last.pt"
    if settings.resume:
        if not last.is_file():
            raise TrainingError(f"cannot resume: {last} not found; start a new run without --resume")
    else:
        check_model_name(settings.model)
        check_new_run_folder(run_dir)
        check_run_size(settings)
        layout = check_training_data(Path(settings.data))
        schedule = schedule_for(settings)

    threads = set_torch_threads(settings.threads)
    device = resolve_device(settings.device)
    if not getattr(trainer_module.check_amp, "skips_download", False):
        trainer_module.check_amp = _check_amp_offline(trainer_module.check_amp)

    if settings.resume:
        model = load_yolo(last, "checkpoint")
        check_resumable(model, last)
        _check_resume_data(run_dir)
        logger.info("resuming %s on %s with %d threads", last, device, threads)
        model.train(resume=True, device=device)
    else:
        logger.info(
            "training %s on %s with %d threads for %d epochs: %s",
            settings.model,
            layout.yaml_path,
            threads,
            settings.epochs,
            schedule,
        )
        model = load_yolo(settings.model, "model")
        data = write_training_yaml(layout, run_dir)
        write_json(run_dir / RUN_SETTINGS_FILE, settings_as_dict(settings))
        model.train(
            data=str(data),
            epochs=settings.epochs,
            imgsz=settings.imgsz,
            batch=settings.batch,
            device=device,
            project=str(Path(settings.project).resolve()),
            name=settings.name,
            exist_ok=True,
            optimizer=schedule.optimizer,
            lr0=schedule.lr0,
            lrf=schedule.lrf,
            warmup_epochs=schedule.warmup_epochs,
            close_mosaic=schedule.close_mosaic,
            patience=settings.patience,
            seed=settings.seed,
            workers=settings.workers,
            fraction=settings.fraction,
            save_period=1,
            plots=False,  # Plotting fetches a font from the internet on first use.
            amp=device != "cpu",
            **settings.extra,
        )

    save_dir = Path(model.trainer.save_dir)
    return TrainResult(
        run_dir=save_dir,
        best=save_dir / "weights" / "best.pt",
        last=save_dir / "weights" / "last.pt",
        results_csv=save_dir / "results.csv",
    )


def strip_checkpoint(source: Path, destination: Path) -> Path:
    """Copy a training checkpoint without its optimizer state, with fp16 weights."""
    from ultralytics.utils.torch_utils import strip_optimizer

    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(destination.name + ".partial")
    shutil.copyfile(source, temporary)
    strip_optimizer(str(temporary))
    os.replace(temporary, destination)
    return destination


def read_results_csv(path: Path) -> list[dict[str, float]]:
    """Read an Ultralytics ``results.csv`` into one dict per epoch, with stripped column names.

    A run resumed in the middle of an epoch can list that epoch twice; the later row wins.
    """
    by_epoch: dict[float, dict[str, float]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            values = {key.strip(): float(value) for key, value in row.items() if value not in ("", None)}
            by_epoch[values.get("epoch", float(len(by_epoch) + 1))] = values
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically, so a reader never sees half a file."""
    path = Path(path)
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(temporary, path)


def settings_as_dict(settings: TrainSettings) -> dict[str, Any]:
    """Return the settings as plain JSON-ready values."""
    values = asdict(settings)
    values["data"] = str(settings.data)
    values["project"] = str(settings.project)
    return values


# ---------------------------------------------------------------------------
# Publishing a finished run: stripped weights and a model card
# ---------------------------------------------------------------------------

# results.csv column -> model card column, as Ultralytics 8.4 names them for detection.
CARD_METRIC_COLUMNS = {
    "metrics/precision(B)": "precision",
    "metrics/recall(B)": "recall",
    "metrics/mAP50(B)": "mAP50",
    "metrics/mAP50-95(B)": "mAP50-95",
}


def train_command_line(settings: TrainSettings, output: Path) -> str:
    """Return the ``smokedet train`` command that repeats a run, for the model card."""
    import shlex

    words = ["smokedet", "train", "--data", str(settings.data), "--model", settings.model]
    words += ["--epochs", str(settings.epochs), "--imgsz", str(settings.imgsz), "--batch", str(settings.batch)]
    words += ["--device", settings.device, "--project", str(settings.project), "--name", settings.name]
    schedule_options = {
        "--optimizer": settings.optimizer,
        "--lr0": settings.lr0,
        "--lrf": settings.lrf,
        "--warmup-epochs": settings.warmup_epochs,
        "--close-mosaic": settings.close_mosaic,
    }
    for option, value in schedule_options.items():
        if value is not None:
            words += [option, f"{value:g}" if isinstance(value, float) else str(value)]
    words += ["--output", str(output)]
    return shlex.join(words)


def publish_run(result: TrainResult, settings: TrainSettings, output: Path) -> tuple[Path, Path]:
    """Copy the run's best weights, stripped, to ``output`` and write a Markdown model card beside them.

    Returns the weights and card paths. Falls back to last.pt when the run never saved a best.pt.
    """
    check_output_path(output)
    source = result.best if result.best.is_file() else result.last
    if not source.is_file():
        raise TrainingError(f"run {result.run_dir} has no weights/best.pt or weights/last.pt; the run did not finish an epoch")
    command = train_command_line(settings, output)
    if settings.resume:
        settings = _settings_of_run(result.run_dir, settings)
        command = train_command_line(settings, output) + " (interrupted, then continued with --resume)"
    try:
        weights = strip_checkpoint(source, Path(output))
    except OSError as error:
        raise TrainingError(
            f"could not write {output} ({error.strerror or error}); the trained weights are kept in {source}"
        ) from error
    rows = read_results_csv(result.results_csv) if result.results_csv.is_file() else []
    card = weights.with_suffix(".md")
    card.write_text(render_model_card(weights, source, settings, rows, command), encoding="utf-8")
    logger.info("wrote %s and %s from %s", weights, card, source)
    return weights, card


def _settings_of_run(run_dir: Path, settings: TrainSettings) -> TrainSettings:
    """Return ``settings`` with data, model, epochs, image size, batch and schedule as the run started.

    A resumed run keeps the arguments it started with, not the ones given with --resume.
    They come from the run's args.yaml, except data, model and device, which come from
    the settings file that train() writes: args.yaml names the run's own copy of
    data.yaml, and Ultralytics rewrites the model to last.pt and the device on resume.
    """
    import dataclasses

    import yaml

    args_file = Path(run_dir) / "args.yaml"
    if not args_file.is_file():
        return settings
    arguments = yaml.safe_load(args_file.read_text(encoding="utf-8")) or {}
    started = Path(run_dir) / RUN_SETTINGS_FILE
    if started.is_file():
        recorded = json.loads(started.read_text(encoding="utf-8"))
        for key in ("data", "model", "device"):
            arguments[key] = recorded.get(key, arguments.get(key))
    return dataclasses.replace(
        settings,
        data=Path(arguments.get("data", settings.data)),
        model=str(arguments.get("model", settings.model)),
        epochs=int(arguments.get("epochs", settings.epochs)),
        imgsz=int(arguments.get("imgsz", settings.imgsz)),
        batch=int(arguments.get("batch", settings.batch)),
        device=str(arguments.get("device", settings.device)),
        optimizer=_argument(arguments, "optimizer", str, settings.optimizer),
        lr0=_argument(arguments, "lr0", float, settings.lr0),
        lrf=_argument(arguments, "lrf", float, settings.lrf),
        warmup_epochs=_argument(arguments, "warmup_epochs", float, settings.warmup_epochs),
        close_mosaic=_argument(arguments, "close_mosaic", int, settings.close_mosaic),
    )


def _argument(arguments: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    """Return ``arguments[key]`` converted to ``kind``, or ``default`` when the run did not record it."""
    value = arguments.get(key)
    return default if value is None else kind(value)


def _describe_optimizer(schedule: Schedule) -> str:
    if schedule.optimizer == "auto":
        # Ultralytics then picks the optimizer and learning rate itself and ignores lr0; its log names them.
        return "auto: chosen by Ultralytics from the run length (see the training log)"
    return f"{schedule.optimizer}, lr0 {schedule.lr0:g} decaying linearly to {schedule.lrf:g} of it"


def _describe_warmup(schedule: Schedule, epochs: int) -> str:
    # Ultralytics 8.4 caps warm-up at epochs - 1, so that the final epoch always trains without it.
    applied = min(schedule.warmup_epochs, max(epochs - 1, 0))
    unit = "epoch" if applied == 1 else "epochs"
    if applied == schedule.warmup_epochs:
        return f"{applied:g} {unit}" if applied else "none"
    return f"{applied:g} {unit} ({schedule.warmup_epochs:g} requested, capped at one less than the run's {epochs})"


def _describe_mosaic(schedule: Schedule, epochs: int) -> str:
    if schedule.close_mosaic >= epochs:
        return "off for the whole run"
    if schedule.close_mosaic == 0:
        return "on for the whole run"
    return f"on for epochs 1 to {epochs - schedule.close_mosaic}, off for the last {schedule.close_mosaic}"


def render_model_card(weights: Path, source: Path, settings: TrainSettings, rows: list[dict[str, float]], command: str) -> str:
    """Return a Markdown model card: data, command, training settings and validation metrics per epoch."""
    schedule = schedule_for(settings)
    lines = [
        f"# {weights.stem}",
        "",
        "A one-class cigarette detector trained with Ultralytics.",
        "",
        "| | |",
        "|---|---|",
        f"| data | `{Path(settings.data).resolve()}` |",
        f"| command | `{command}` |",
        f"| model | `{settings.model}` |",
        f"| epochs | {len(rows) if rows else '?'} run of {settings.epochs} requested |",
        f"| image size | {settings.imgsz} |",
        f"| batch | {settings.batch} |",
        f"| optimizer | {_describe_optimizer(schedule)} |",
        f"| warm-up | {_describe_warmup(schedule, settings.epochs)} |",
        f"| mosaic | {_describe_mosaic(schedule, settings.epochs)} |",
        f"| weights | copied from `{source}` without optimizer state |",
        "",
        "## Validation metrics per epoch",
        "",
        "From the run's results.csv: Ultralytics validates on the `val` split after each epoch.",
        "",
    ]
    if not rows:
        lines.append("No results.csv was found for this run.")
        return "\n".join(lines) + "\n"

    headers = ["epoch", *CARD_METRIC_COLUMNS.values()]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "---|" * len(headers))
    for row in rows:
        cells = [str(int(row.get("epoch", 0)))]
        cells += [f"{row[column]:.4f}" if column in row else "-" for column in CARD_METRIC_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------

SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass(frozen=True)
class BoxMetrics:
    """Ultralytics box metrics over a set of images; mAP is computed over all confidences."""

    images: int
    precision: float
    recall: float
    map50: float
    map50_95: float


@dataclass
class ImageOutcomes:
    """Image-level counts at one confidence threshold: any detection on an image counts as a find."""

    positives_found: int = 0
    positives_missed: int = 0
    negatives_clean: int = 0
    negatives_false_alarm: int = 0

    def add(self, has_box: bool, detected: bool) -> None:
        if has_box and detected:
            self.positives_found += 1
        elif has_box:
            self.positives_missed += 1
        elif detected:
            self.negatives_false_alarm += 1
        else:
            self.negatives_clean += 1


@dataclass
class EvalReport:
    """Evaluation of one weights file on one dataset split, overall and per source."""

    weights: Path
    data: Path
    split: str
    confidence: float
    metrics: BoxMetrics
    outcomes: ImageOutcomes
    source_metrics: dict[str, BoxMetrics] = field(default_factory=dict)
    source_outcomes: dict[str, ImageOutcomes] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "weights": str(self.weights),
            "data": str(self.data),
            "split": self.split,
            "confidence": self.confidence,
            "metrics": asdict(self.metrics),
            "image_level": asdict(self.outcomes),
            "sources": {
                source: {"metrics": asdict(metrics), "image_level": asdict(self.source_outcomes[source])}
                for source, metrics in self.source_metrics.items()
            },
        }


def read_manifest_sources(dataset_root: Path, images: list[Path]) -> dict[str, list[Path]]:
    """Group ``images`` by the ``source`` column of ``dataset_root/manifest.csv``; empty when there is no manifest.

    Paths in the manifest's ``file`` column are relative to the dataset root.
    """
    manifest = Path(dataset_root) / "manifest.csv"
    if not manifest.is_file():
        return {}
    wanted = {image.resolve() for image in images}
    groups: dict[str, list[Path]] = {}
    with open(manifest, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not {"file", "source"} <= set(reader.fieldnames or ()):
            raise TrainingError(f"{manifest}: expected columns file and source, found {reader.fieldnames}")
        for row in reader:
            image = (Path(dataset_root) / row["file"]).resolve()
            if image in wanted:
                groups.setdefault(row["source"], []).append(image)
    return dict(sorted(groups.items()))


def evaluate(
    weights: Path,
    data: Path,
    split: str = "test",
    confidence: float | None = None,
    imgsz: int = 416,
    batch: int = 16,
    device: str = "auto",
    workers: int = 2,
) -> EvalReport:
    """Evaluate weights on one split with Ultralytics ``val``, per manifest source, and image by image.

    ``confidence`` (default: the shipped model's threshold) sets only the image-level
    counts; precision, recall and mAP come from Ultralytics at its own low threshold,
    as Ultralytics reports them.
    """
    from detector.data import DataError, find_data_yaml, list_split_images, load_layout
    from detector.model import DEFAULT_CONFIDENCE, Detector, ModelSettings, resolve_device

    confidence = DEFAULT_CONFIDENCE if confidence is None else confidence

    os.environ.setdefault("YOLO_OFFLINE", "1")
    weights = Path(weights)
    if not weights.exists():
        raise TrainingError(f"weights {str(weights)!r} not found: pass --weights with a .pt or exported model file")
    split_key = SPLIT_ALIASES.get(split)
    if split_key is None:
        raise TrainingError(f"invalid split {split!r}: use train, val or test")
    try:
        yaml_path = find_data_yaml(Path(data))
        layout = load_layout(yaml_path)
    except DataError as error:
        raise TrainingError(str(error)) from error
    if split_key not in layout.splits:
        raise TrainingError(f"{yaml_path} has no {split_key!r} split; pass --split with one of {sorted(layout.splits)}")
    images = list_split_images(layout.splits[split_key])
    if not images:
        raise TrainingError(f"{split_key} split of {yaml_path} has no images; run `smokedet data check` on it")

    device = resolve_device(device)
    # The detector checks the weights file (folders, unreadable files) before Ultralytics' validator opens it.
    detector = Detector(ModelSettings(weights=weights, device=device, imgsz=imgsz, confidence=confidence))
    model = load_yolo(weights, "weights")
    sources = read_manifest_sources(yaml_path.parent, images)
    with tempfile.TemporaryDirectory(prefix="smokedet-eval-") as scratch:
        scratch_dir = Path(scratch)
        validate = _validator(model, imgsz=imgsz, batch=batch, device=device, workers=workers, scratch=scratch_dir)
        metrics = validate(_write_subset_yaml(scratch_dir, "all", images, layout.names), len(images))
        source_metrics = {}
        for source, source_images in sources.items():
            subset_yaml = _write_subset_yaml(scratch_dir, f"source-{source}", source_images, layout.names)
            source_metrics[source] = validate(subset_yaml, len(source_images))

    detected = _detect_images(detector, images, batch)
    outcomes = ImageOutcomes()
    for image in images:
        outcomes.add(_has_box(image), detected[image])
    source_outcomes = {}
    for source, source_images in sources.items():
        source_outcomes[source] = ImageOutcomes()
        for image in source_images:
            source_outcomes[source].add(_has_box(image), detected[image])

    return EvalReport(
        weights=weights,
        data=yaml_path,
        split=split_key,
        confidence=confidence,
        metrics=metrics,
        outcomes=outcomes,
        source_metrics=source_metrics,
        source_outcomes=source_outcomes,
    )


def _validator(model: Any, imgsz: int, batch: int, device: str, workers: int, scratch: Path):
    def validate(data_yaml: Path, image_count: int) -> BoxMetrics:
        logger.info("validating on %d images listed by %s", image_count, data_yaml)
        results = model.val(
            data=str(data_yaml),
            split="val",
            imgsz=imgsz,
            batch=batch,
            device=device,
            workers=workers,
            plots=False,  # Plotting fetches a font from the internet on first use.
            save_json=False,
            verbose=False,
            project=str(scratch),
            name="val",
            exist_ok=True,
        )
        box = results.box
        return BoxMetrics(
            images=image_count,
            precision=float(box.mp),
            recall=float(box.mr),
            map50=float(box.map50),
            map50_95=float(box.map),
        )

    return validate


def _write_subset_yaml(folder: Path, subset: str, images: list[Path], names: dict[int, str]) -> Path:
    """Link images and their label files into ``folder/<subset>`` and write a data yaml over the links.

    Ultralytics writes a labels.cache beside the label files it reads; the links keep
    that file out of the dataset, which may be read-only or shared.
    """
    from detector.data import label_path_for

    safe = "".join(character if character.isalnum() or character in "-_" else "_" for character in subset)
    view = folder / safe
    (view / "images").mkdir(parents=True)
    (view / "labels").mkdir()
    for index, image in enumerate(images):
        stem = f"{index:06d}-{image.stem}"  # The index keeps same-named images of different folders apart.
        (view / "images" / f"{stem}{image.suffix}").symlink_to(image.resolve())
        label = label_path_for(image)
        if label.is_file():
            (view / "labels" / f"{stem}.txt").symlink_to(label.resolve())
    subset_yaml = folder / f"{safe}.yaml"
    content = {"path": str(view), "train": "images", "val": "images", "names": names}
    subset_yaml.write_text(json.dumps(content), encoding="utf-8")  # JSON is valid YAML.
    return subset_yaml


def _has_box(image: Path) -> bool:
    from detector.data import label_path_for

    label = label_path_for(image)
    if not label.is_file():
        return False
    return any(line.split() for line in label.read_text(encoding="utf-8-sig").splitlines())


def _detect_images(detector: Any, images: list[Path], batch: int) -> dict[Path, bool]:
    import cv2

    detected: dict[Path, bool] = {}
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        frames = []
        for image in chunk:
            frame = cv2.imread(str(image), cv2.IMREAD_COLOR)
            if frame is None:
                raise TrainingError(f"image {image} could not be read; run `smokedet data check` on the dataset")
            frames.append(frame)
        for image, detections in zip(chunk, detector.detect(frames)):
            detected[image] = len(detections) > 0
    return detected


# ---------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------

EXPORT_FORMATS = ("onnx", "openvino", "engine")
# Name endings by which Ultralytics 8.4 recognises an exported model when loading it.
EXPORT_NAME_ENDINGS = {"onnx": ".onnx", "openvino": "_openvino_model", "engine": ".engine"}
EXPORT_PACKAGES = {"onnx": ("onnx", "onnxruntime"), "openvino": ("openvino",), "engine": ("tensorrt",)}
# NOTE: no test runs the TensorRT path, because it needs a CUDA GPU and the tensorrt package.
ENGINE_MAX_BATCH = 16  # Largest batch a dynamic TensorRT engine accepts.


def check_export_requirements(export_format: str, half: bool, cuda_available: bool) -> None:
    """Raise TrainingError when this machine cannot export to ``export_format``.

    Ultralytics would otherwise try to pip-install missing packages, which fails offline.
    """
    import importlib.util

    if export_format not in EXPORT_FORMATS:
        raise TrainingError(f"invalid export format {export_format!r}: use one of {', '.join(EXPORT_FORMATS)}")
    if export_format == "engine" and not cuda_available:
        raise TrainingError("TensorRT export (--format engine) needs a CUDA GPU and none was found; export onnx or openvino here")
    if half and export_format == "onnx" and not cuda_available:
        raise TrainingError("--half with --format onnx needs a CUDA GPU; drop --half to export fp32 on this machine")
    missing = [name for name in EXPORT_PACKAGES[export_format] if importlib.util.find_spec(name) is None]
    if missing:
        raise TrainingError(f"{export_format} export needs the Python package(s) {', '.join(missing)}: pip install {' '.join(missing)}")


def export_model(
    weights: Path,
    export_format: str,
    imgsz: int = 416,
    half: bool = False,
    device: str = "auto",
    output: Path | None = None,
) -> Path:
    """Export PyTorch weights with Ultralytics and return the exported file or folder.

    Exports have a dynamic batch size, because ``Detector.detect`` runs batches.
    Without ``output`` the export lands beside the weights, named after them.
    """
    import importlib.util

    import torch

    os.environ.setdefault("YOLO_OFFLINE", "1")
    weights = Path(weights)
    if not weights.is_file() or weights.suffix != ".pt":
        raise TrainingError(f"weights {str(weights)!r} not found or not a .pt file: export starts from PyTorch weights")
    check_export_requirements(export_format, half, torch.cuda.is_available())
    ending = EXPORT_NAME_ENDINGS[export_format]
    if output is not None and not Path(output).name.endswith(ending):
        raise TrainingError(
            f"output {str(output)!r} must end in {ending!r} for {export_format}, because Ultralytics recognises the format by it"
        )
    if export_format == "engine":
        device = "cuda:0" if device == "auto" else device
    from detector.model import resolve_device

    device = resolve_device(device)

    if output is not None:
        output = Path(output)
        if output.is_dir() and export_format != "openvino":
            raise TrainingError(f"output {str(output)!r} is a folder: pass a file path ending in {ending}")
        check_writable_location(output)
        output.parent.mkdir(parents=True, exist_ok=True)
    load_yolo(weights, "weights")  # Names the user's file in the error, not the copy exported below.
    with tempfile.TemporaryDirectory(prefix=".smokedet-export-", dir=output.parent if output else None) as scratch:
        source = weights
        if output is not None:
            # Ultralytics writes next to its input, so export a copy beside the requested output.
            source = Path(scratch) / weights.name
            shutil.copyfile(weights, source)
        model = load_yolo(source, "weights")
        logger.info("exporting %s to %s at imgsz %d on %s", weights, export_format, imgsz, device)
        exported = Path(
            model.export(
                format=export_format,
                imgsz=imgsz,
                quantize=16 if half else None,  # Ultralytics 8.4 replaced half=True with quantize=16.
                device=device,
                dynamic=True,
                batch=ENGINE_MAX_BATCH if export_format == "engine" else 1,
                simplify=importlib.util.find_spec("onnxslim") is not None,
            )
        )
        if output is not None:
            if output.exists():
                shutil.rmtree(output) if output.is_dir() else output.unlink()
            shutil.move(str(exported), output)
            exported = output
    logger.info("exported %s", exported)
    return exported
