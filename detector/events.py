"""Turn per-frame detections into smoking events, with hysteresis in seconds of video time.

An event opens when enough sampled frames within the last ``window_seconds``
contain a cigarette, and closes once no cigarette has been seen for
``close_after_seconds``. Its start is the first positive frame of the opening
window and its end the last positive frame, so a one-frame flicker neither opens
an event nor splits a long one.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import supervision as sv

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EventSettings:
    """Hysteresis thresholds of the event logic; all durations are seconds of video time."""

    window_seconds: float = 1.0
    min_positive_fraction: float = 0.6
    min_positive_frames: int = 2
    close_after_seconds: float = 2.0
    confidence: float = 0.0  # A detection counts when its confidence is at least this (0: every detection).

    def __post_init__(self) -> None:
        if self.window_seconds <= 0:
            raise ValueError(f"window_seconds must be positive, got {self.window_seconds}")
        if not 0.0 < self.min_positive_fraction <= 1.0:
            raise ValueError(f"min_positive_fraction must be within (0, 1], got {self.min_positive_fraction}")
        if self.min_positive_frames < 1:
            raise ValueError(f"min_positive_frames must be at least 1, got {self.min_positive_frames}")
        if self.close_after_seconds < 0:
            raise ValueError(f"close_after_seconds must not be negative, got {self.close_after_seconds}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be within [0, 1], got {self.confidence}")


@dataclass
class SmokingEvent:
    """One stretch of video time in which someone was smoking."""

    event_id: int
    source_id: str
    start: float
    end: float
    peak_confidence: float
    peak_time: float
    peak_frame_index: int
    positive_frames: int
    sampled_frames: int
    closed: bool = False
    evidence_image: np.ndarray | None = field(default=None, repr=False)
    evidence_detections: sv.Detections | None = field(default=None, repr=False)

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class EventChange:
    """An event that opened or closed on the frame just processed."""

    kind: Literal["opened", "closed"]
    event: SmokingEvent


@dataclass
class _Observation:
    timestamp: float
    frame_index: int
    confidence: float  # Top confidence in the frame; 0 when no cigarette was found.
    image: np.ndarray | None
    detections: sv.Detections | None


def top_confidence(detections: sv.Detections, minimum: float = 0.0) -> float:
    """Return the highest detection confidence at or above ``minimum``, or 0.0."""
    if len(detections) == 0 or detections.confidence is None:
        return 0.0
    kept = detections.confidence[detections.confidence >= minimum]
    return float(kept.max()) if kept.size else 0.0


class EventTracker:
    """Follow one video's sampled frames and report when smoking events open and close.

    ``frame_interval`` is the expected time between sampled frames in seconds. It
    caps ``min_positive_frames`` at the number of frames the window can hold, so a
    slow sample rate can still open an event.
    """

    def __init__(self, settings: EventSettings | None = None, source_id: str = "", frame_interval: float | None = None):
        self.settings = settings or EventSettings()
        self.source_id = source_id
        self._window: deque[_Observation] = deque()
        self._current: SmokingEvent | None = None
        self._last_positive_time: float | None = None
        self._quiet_frames = 0  # Sampled frames since the event's last positive one.
        self._next_id = 1
        self.events: list[SmokingEvent] = []
        frames_in_window = math.inf if not frame_interval else max(1, math.floor(self.settings.window_seconds / frame_interval))
        self._min_frames = int(min(self.settings.min_positive_frames, frames_in_window))

    @property
    def current(self) -> SmokingEvent | None:
        """The event in progress, if any."""
        return self._current

    def update(
        self,
        timestamp: float,
        detections: sv.Detections,
        frame_index: int = -1,
        image: np.ndarray | None = None,
    ) -> list[EventChange]:
        """Feed one sampled frame's detections; return the events it opened or closed."""
        confidence = top_confidence(detections, self.settings.confidence)
        observation = _Observation(timestamp, frame_index, confidence, image, detections if confidence > 0 else None)
        if self._current is None:
            return self._update_quiet(observation)
        return self._update_active(observation)

    def finish(self) -> list[EventChange]:
        """Close the event in progress at the end of the stream."""
        if self._current is None:
            return []
        return [self._close()]

    def _update_quiet(self, observation: _Observation) -> list[EventChange]:
        self._window.append(observation)
        horizon = observation.timestamp - self.settings.window_seconds
        while self._window and self._window[0].timestamp <= horizon:
            self._window.popleft()

        positives = [item for item in self._window if item.confidence > 0]
        needed = max(self._min_frames, math.ceil(self.settings.min_positive_fraction * len(self._window)))
        if len(positives) < needed:
            return []

        peak = max(positives, key=lambda item: item.confidence)
        first = positives[0]
        sampled = sum(1 for item in self._window if item.timestamp >= first.timestamp)
        self._current = SmokingEvent(
            event_id=self._next_id,
            source_id=self.source_id,
            start=first.timestamp,
            end=positives[-1].timestamp,
            peak_confidence=peak.confidence,
            peak_time=peak.timestamp,
            peak_frame_index=peak.frame_index,
            positive_frames=len(positives),
            sampled_frames=sampled,
            evidence_image=peak.image,
            evidence_detections=peak.detections,
        )
        self._next_id += 1
        self._last_positive_time = positives[-1].timestamp
        self._window.clear()
        logger.debug("%s: event %d opened at %.2f s", self.source_id, self._current.event_id, self._current.start)
        return [EventChange("opened", self._current)]

    def _update_active(self, observation: _Observation) -> list[EventChange]:
        event = self._current
        event.sampled_frames += 1
        if observation.confidence > 0:
            self._quiet_frames = 0
            event.positive_frames += 1
            event.end = observation.timestamp
            self._last_positive_time = observation.timestamp
            if observation.confidence > event.peak_confidence:
                event.peak_confidence = observation.confidence
                event.peak_time = observation.timestamp
                event.peak_frame_index = observation.frame_index
                event.evidence_image = observation.image
                event.evidence_detections = observation.detections
            return []

        self._quiet_frames += 1
        if observation.timestamp - self._last_positive_time >= self.settings.close_after_seconds:
            # The quiet frames after the last positive one are not part of the event.
            return [self._close()]
        return []

    def _close(self) -> EventChange:
        event = self._current
        event.sampled_frames -= self._quiet_frames
        self._quiet_frames = 0
        event.closed = True
        self.events.append(event)
        self._current = None
        self._window.clear()
        logger.debug("%s: event %d closed at %.2f s", self.source_id, event.event_id, event.end)
        return EventChange("closed", event)
