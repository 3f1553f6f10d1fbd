"""Train, evaluate and export wrappers over Ultralytics that never download anything."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from detector.threads import set_torch_threads

logger = logging.getLogger(__name__)

# Ultralytics downloads any weights file whose name matches one of its release assets.
OFFICIAL_WEIGHT_PREFIXES = ("yolov", "yolo11", "yolo12", "yolo26", "rtdetr", "sam", "mobile_sam", "fastsam")


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
    optimizer: str = "AdamW"
    lr0: float = 0.002
    warmup_epochs: float = 0.3
    close_mosaic: int = 1
    patience: int = 50
    seed: int = 0
    workers: int = 2
    fraction: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainResult:
    """Where a finished (or interrupted) run left its files."""

    run_dir: Path
    best: Path
    last: Path
    results_csv: Path


def check_model_name(model: str) -> None:
    """Raise TrainingError for a missing checkpoint or an official asset name that would trigger a download."""
    path = Path(model)
    if path.suffix in {".yaml", ".yml"}:
        return  # An architecture config builds an untrained model, which downloads nothing.
    if not path.is_file():
        raise TrainingError(f"model {model!r} not found: pass an existing .pt checkpoint or a .yaml architecture")
    if path.name.lower().startswith(OFFICIAL_WEIGHT_PREFIXES) and path.suffix == ".pt":
        raise TrainingError(
            f"model {model!r} is named like an Ultralytics release asset, which makes Ultralytics try to "
            "download it; rename the file (for example to cigarette-<name>.pt)"
        )


def train(settings: TrainSettings) -> TrainResult:
    """Train (or resume) a YOLO detector and return the run's weight files."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    if not settings.resume:
        check_model_name(settings.model)
    data = Path(settings.data)
    if not data.is_file():
        raise TrainingError(f"dataset file {str(data)!r} not found: pass the data.yaml of a YOLO export")

    from ultralytics import YOLO

    from detector.model import resolve_device

    threads = set_torch_threads(settings.threads)
    device = resolve_device(settings.device)
    run_dir = Path(settings.project).resolve() / settings.name

    if settings.resume:
        last = run_dir / "weights" / "last.pt"
        if not last.is_file():
            raise TrainingError(f"cannot resume: {last} not found; start a new run without --resume")
        logger.info("resuming %s on %s with %d threads", last, device, threads)
        model = YOLO(str(last))
        model.train(resume=True, device=device)
    else:
        logger.info("training %s on %s with %d threads for %d epochs", settings.model, data, threads, settings.epochs)
        model = YOLO(settings.model)
        model.train(
            data=str(data.resolve()),
            epochs=settings.epochs,
            imgsz=settings.imgsz,
            batch=settings.batch,
            device=device,
            project=str(Path(settings.project).resolve()),
            name=settings.name,
            exist_ok=True,
            optimizer=settings.optimizer,
            lr0=settings.lr0,
            warmup_epochs=settings.warmup_epochs,
            close_mosaic=settings.close_mosaic,
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
    """Read an Ultralytics ``results.csv`` into one dict per epoch, with stripped column names."""
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            rows.append({key.strip(): float(value) for key, value in row.items() if value not in ("", None)})
    return rows


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
