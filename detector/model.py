"""The model boundary: Ultralytics weights in, ``supervision.Detections`` out.

Ultralytics ``Results`` never leave this module.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import supervision as sv

from detector.threads import set_torch_threads

logger = logging.getLogger(__name__)

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "cigarette-yolov9t.pt"
# The confidence threshold the model card recommends for the shipped weights.
DEFAULT_CONFIDENCE = 0.20
EXPORTED_SUFFIXES = {".onnx", ".torchscript", ".engine", ".tflite", ".mlpackage"}


class ModelError(RuntimeError):
    """Weights could not be found, loaded or run."""


def resolve_device(request: str | None) -> str:
    """Turn ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``N`` into a device string Ultralytics accepts.

    Raises ModelError when a GPU is requested and none is available.
    """
    import torch

    request = (request or "auto").strip().lower()
    if request == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if request == "cpu":
        return "cpu"
    index_text = request.removeprefix("cuda").lstrip(":") or "0"
    if not index_text.isdigit():
        raise ModelError(f"invalid device {request!r}: use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ModelError(f"device {request!r} requested but no CUDA GPU is available; use --device cpu or auto")
    index = int(index_text)
    if index >= torch.cuda.device_count():
        raise ModelError(f"device {request!r} not found: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return f"cuda:{index}"


@dataclass(frozen=True)
class ModelSettings:
    """How to load and run the detector."""

    weights: Path = DEFAULT_WEIGHTS
    device: str = "auto"
    imgsz: int = 416
    confidence: float = DEFAULT_CONFIDENCE
    iou: float = 0.5
    half: bool | None = None  # None: fp16 on CUDA, fp32 on CPU.
    threads: int = 0  # 0: every core but one, which stays free for decoding video.

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be within [0, 1], got {self.confidence}")
        if not 0.0 < self.iou <= 1.0:
            raise ValueError(f"iou must be within (0, 1], got {self.iou}")
        if self.imgsz < 32 or self.imgsz % 32:
            raise ValueError(f"imgsz must be a multiple of 32 and at least 32, got {self.imgsz}")


class Detector:
    """A loaded cigarette detector that runs on batches of BGR frames."""

    def __init__(self, settings: ModelSettings | None = None) -> None:
        self.settings = settings or ModelSettings()
        os.environ.setdefault("YOLO_OFFLINE", "1")
        weights = Path(self.settings.weights)
        if not weights.exists():
            raise ModelError(f"weights {str(weights)!r} not found: pass --weights with a .pt or exported model file")
        if weights.is_dir() and not weights.name.endswith("_openvino_model"):
            raise ModelError(
                f"weights {str(weights)!r} is a folder: pass a .pt, .onnx or .engine file, or an *_openvino_model folder"
            )

        self.device = resolve_device(self.settings.device)
        # An exported model keeps the precision it was exported with, so fp16 input would not match an fp32 export.
        exported = weights.suffix in EXPORTED_SUFFIXES or weights.is_dir()
        default_half = self.device.startswith("cuda") and not exported
        self.half = default_half if self.settings.half is None else self.settings.half
        # Video decoding runs in its own thread beside inference, so one core is left to it.
        self.threads = set_torch_threads(self.settings.threads, keep_free=1)

        from ultralytics import YOLO

        try:
            self._model = YOLO(str(weights), task="detect")
            # Exported models are opened lazily, so reading the class names is what loads them.
            self.names: dict[int, str] = dict(self._model.names)
        except Exception as error:  # Ultralytics raises many types for unreadable files.
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelError(
                f"weights {str(weights)!r} could not be loaded ({reason}); pass a YOLO detection model file"
            ) from error
        self.weights = weights
        logger.info(
            "loaded %s on %s (%s, %d CPU threads)", weights.name, self.device, "fp16" if self.half else "fp32", self.threads
        )

    @property
    def is_exported(self) -> bool:
        return self.weights.suffix in EXPORTED_SUFFIXES or self.weights.is_dir()

    def warmup(self, shape: tuple[int, int] = (480, 640)) -> float:
        """Run one blank frame through the model and return the seconds it took."""
        started = time.perf_counter()
        self.detect([np.zeros((*shape, 3), dtype=np.uint8)])
        elapsed = time.perf_counter() - started
        logger.debug("warm-up took %.2f s", elapsed)
        return elapsed

    def detect(self, frames: Sequence[np.ndarray], confidence: float | None = None) -> list[sv.Detections]:
        """Detect cigarettes in a batch of BGR frames, one ``Detections`` per frame."""
        if len(frames) == 0:
            return []
        results = self._model.predict(
            list(frames),
            imgsz=self.settings.imgsz,
            conf=self.settings.confidence if confidence is None else confidence,
            iou=self.settings.iou,
            device=self.device,
            quantize=16 if self.half else None,
            batch=len(frames),
            verbose=False,
        )
        return [sv.Detections.from_ultralytics(result) for result in results]

    def describe(self) -> dict[str, object]:
        """Return the facts a report needs about this model."""
        return {
            "weights": str(self.weights),
            "device": self.device,
            "half": self.half,
            "imgsz": self.settings.imgsz,
            "confidence": self.settings.confidence,
            "iou": self.settings.iou,
            "classes": self.names,
        }
