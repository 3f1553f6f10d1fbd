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
        self._frame_interval = frame_interval
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
        # The last positive frame stands for the time until the next sampled frame.
        event.end += self._frame_interval or 0.0
        event.closed = True
        self.events.append(event)
        self._current = None
        self._window.clear()
        logger.debug("%s: event %d closed at %.2f s", self.source_id, event.event_id, event.end)
        return EventChange("closed", event)


# ---------------------------------------------------------------------------
# Live alerts: one camera's smoking state over seconds of stream time.


@dataclass(frozen=True)
class AlertSettings:
    """Timing of live alerts; all durations are seconds of stream time (capture time for cameras).

    Smoking starts at a frame with a detection and persists while no gap of
    ``clear_after`` seconds without one occurs. An alert is raised once it has
    persisted for ``min_duration`` seconds with at least ``min_positive_fraction``
    of the processed frames positive, and cleared after ``clear_after`` seconds
    without a detection. No new alert is raised within ``cooldown`` seconds of
    the previous alert's clearing. Smoking that outlasts the cooldown raises the
    next alert when the cooldown ends.
    """

    min_duration: float = 3.0
    clear_after: float = 10.0
    cooldown: float = 60.0
    min_positive_fraction: float = 0.5
    confidence: float = 0.0  # A detection counts when its confidence is at least this (0: every detection).

    def __post_init__(self) -> None:
        # Written as "not (valid)" so that NaN, which fails every comparison, is rejected too.
        if not (math.isfinite(self.min_duration) and self.min_duration >= 0):
            raise ValueError(f"min_duration must be a finite number of 0 or more seconds, got {self.min_duration}")
        if not (math.isfinite(self.clear_after) and self.clear_after > 0):
            raise ValueError(f"clear_after must be a finite positive number of seconds, got {self.clear_after}")
        if not (math.isfinite(self.cooldown) and self.cooldown >= 0):
            raise ValueError(f"cooldown must be a finite number of 0 or more seconds, got {self.cooldown}")
        if not 0.0 < self.min_positive_fraction <= 1.0:
            raise ValueError(f"min_positive_fraction must be within (0, 1], got {self.min_positive_fraction}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be within [0, 1], got {self.confidence}")


@dataclass
class Alert:
    """One raised alert of one camera; times are seconds of stream time."""

    alert_id: int
    camera: str
    onset: float  # First positive frame of the smoking that raised the alert.
    raised_at: float
    last_positive: float
    peak_confidence: float
    peak_time: float
    positive_frames: int
    processed_frames: int
    cleared_at: float | None = None
    clear_reason: str | None = None  # "quiet", "end_of_stream" or "shutdown".
    evidence_image: np.ndarray | None = field(default=None, repr=False)
    evidence_detections: sv.Detections | None = field(default=None, repr=False)

    @property
    def duration(self) -> float:
        """Seconds from onset to the last positive frame."""
        return self.last_positive - self.onset


@dataclass(frozen=True)
class AlertChange:
    """An alert raised or cleared by the frame (or the passing time) just processed."""

    kind: Literal["raised", "cleared"]
    alert: Alert


class AlertTracker:
    """Follow one camera's processed frames and raise and clear alerts.

    Frames may arrive at an irregular rate, because a live loop drops frames when
    the model is slow, so every rule is stated in seconds, never in frame counts.
    """

    def __init__(self, settings: AlertSettings | None = None, camera: str = "") -> None:
        self.settings = settings or AlertSettings()
        self.camera = camera
        self.active: Alert | None = None
        self.alerts: list[Alert] = []
        self._onset: float | None = None  # Start of the smoking now pending or alerted.
        self._last_positive: float | None = None
        self._positives = 0
        self._processed = 0
        self._peak: tuple[float, float, np.ndarray | None, sv.Detections | None] | None = None
        self._cooldown_until = -math.inf
        self._next_id = 1

    @property
    def pending(self) -> bool:
        """True while smoking is seen but no alert is raised yet."""
        return self._onset is not None and self.active is None

    def update(
        self, timestamp: float, detections: sv.Detections, image: np.ndarray | None = None
    ) -> list[AlertChange]:
        """Feed one processed frame's detections; return the alerts it raised or cleared."""
        confidence = top_confidence(detections, self.settings.confidence)
        changes = self.expire(timestamp)
        if confidence <= 0:
            if self._onset is not None:
                self._processed += 1
                if self.active is not None:
                    self.active.processed_frames += 1
            return changes

        if self._onset is None:
            self._onset = timestamp
            self._positives = 0
            self._processed = 0
            self._peak = None
        self._positives += 1
        self._processed += 1
        self._last_positive = timestamp
        if self._peak is None or confidence > self._peak[0]:
            self._peak = (confidence, timestamp, image, detections)

        if self.active is not None:
            self._extend(self.active, timestamp)
        elif self._ready_to_raise(timestamp):
            changes.append(self._raise(timestamp))
        return changes

    def expire(self, now: float) -> list[AlertChange]:
        """Clear the alert, or forget pending smoking, when ``clear_after`` seconds passed without a detection.

        A live loop calls this also when a camera delivers no frame, so an alert
        clears while the camera is disconnected.
        """
        if self._onset is None or now - self._last_positive < self.settings.clear_after:
            return []
        if self.active is None:
            self._onset = None
            return []
        return [self._clear(now, "quiet")]

    def finish(self, now: float, reason: str) -> list[AlertChange]:
        """Clear the active alert because the stream ended or the watcher stops."""
        if self.active is None:
            self._onset = None
            return []
        return [self._clear(now, reason)]

    def _ready_to_raise(self, timestamp: float) -> bool:
        if timestamp - self._onset < self.settings.min_duration:
            return False
        if self._positives < self.settings.min_positive_fraction * self._processed:
            return False
        return timestamp >= self._cooldown_until

    def _raise(self, timestamp: float) -> AlertChange:
        confidence, peak_time, image, detections = self._peak
        alert = Alert(
            alert_id=self._next_id,
            camera=self.camera,
            onset=self._onset,
            raised_at=timestamp,
            last_positive=timestamp,
            peak_confidence=confidence,
            peak_time=peak_time,
            positive_frames=self._positives,
            processed_frames=self._processed,
            evidence_image=image,
            evidence_detections=detections,
        )
        self._next_id += 1
        self.active = alert
        self.alerts.append(alert)
        logger.debug("%s: alert %d raised at %.2f s", self.camera, alert.alert_id, timestamp)
        return AlertChange("raised", alert)

    def _extend(self, alert: Alert, timestamp: float) -> None:
        alert.last_positive = timestamp
        alert.positive_frames += 1
        alert.processed_frames += 1
        confidence = self._peak[0]
        if confidence > alert.peak_confidence:
            alert.peak_confidence = confidence
            alert.peak_time = self._peak[1]

    def _clear(self, now: float, reason: str) -> AlertChange:
        alert = self.active
        alert.cleared_at = now
        alert.clear_reason = reason
        self.active = None
        self._onset = None
        self._cooldown_until = now + self.settings.cooldown
        logger.debug("%s: alert %d cleared at %.2f s (%s)", self.camera, alert.alert_id, now, reason)
        return AlertChange("cleared", alert)
