"""The one loop: frames from a reader, batched through the model, into events and sinks."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import supervision as sv

from detector.events import EventTracker
from detector.model import Detector
from detector.sinks import SinkSet
from detector.sources import BufferPolicy, EndOfStream, Frame, FrameReader

logger = logging.getLogger(__name__)

EMPTY_DETECTIONS = sv.Detections.empty()


@dataclass
class PipelineStats:
    """Counters of one pipeline run."""

    frames_received: int = 0
    frames_inferred: int = 0
    batches: int = 0
    inference_seconds: float = 0.0
    wall_seconds: float = 0.0
    last_timestamp: float | None = None

    @property
    def inferred_fps(self) -> float:
        return self.frames_inferred / self.wall_seconds if self.wall_seconds > 0 else 0.0


class Pipeline:
    """Wire a frame reader through batched inference and an event tracker to sinks.

    Sampled frames go to the model in batches of up to ``batch_size``. Frames that
    were decoded but not sampled (when a sink wants every frame) pass through in
    order, carrying the detections of the sampled frame before them.
    """

    def __init__(
        self,
        reader: FrameReader,
        detector: Detector,
        tracker: EventTracker,
        sinks: SinkSet,
        batch_size: int = 4,
        on_frame: Callable[[Frame], None] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.reader = reader
        self.detector = detector
        self.tracker = tracker
        self.sinks = sinks
        self.batch_size = batch_size
        self.on_frame = on_frame
        self.stats = PipelineStats()
        self._last_detections = EMPTY_DETECTIONS

    def run(self) -> PipelineStats:
        """Process the whole stream; re-raise the source's error after flushing what came before it."""
        started = time.perf_counter()
        self.reader.start()
        try:
            while True:
                pending, ended = self._collect()
                if pending:
                    self._process(pending)
                if ended is not None:
                    for change in self.tracker.finish():
                        self.sinks.on_event(change)
                    if ended.error is not None:
                        raise ended.error
                    break
        finally:
            self.reader.stop()
            self.stats.wall_seconds = time.perf_counter() - started
        return self.stats

    def _collect(self) -> tuple[list[Frame], EndOfStream | None]:
        """Gather frames up to a batch of sampled ones; live sources take only what is ready."""
        pending: list[Frame] = []
        sampled = 0
        item = self.reader.get()
        while True:
            if isinstance(item, EndOfStream):
                return pending, item
            pending.append(item)
            sampled += item.sampled
            if sampled >= self.batch_size:
                return pending, None
            if self.reader.policy is BufferPolicy.KEEP_LATEST:
                try:
                    item = self.reader.get_nowait()
                except Exception:  # queue.Empty: run on what is here rather than wait.
                    return pending, None
            else:
                item = self.reader.get()

    def _process(self, pending: list[Frame]) -> None:
        batch = [frame for frame in pending if frame.sampled]
        detections: list[sv.Detections] = []
        if batch:
            started = time.perf_counter()
            detections = self.detector.detect([frame.image for frame in batch])
            self.stats.inference_seconds += time.perf_counter() - started
            self.stats.batches += 1
            self.stats.frames_inferred += len(batch)

        results = iter(detections)
        for frame in pending:
            if frame.sampled:
                self._last_detections = next(results)
                for change in self.tracker.update(frame.timestamp, self._last_detections, frame.index, frame.image):
                    self.sinks.on_event(change)
            self.sinks.on_frame(frame, self._last_detections)
            self.stats.frames_received += 1
            self.stats.last_timestamp = frame.timestamp
            if self.on_frame is not None:
                self.on_frame(frame)
