"""Life-cycle tests of the event logic: quiet, onset, sustained, gap, end."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

from detector.events import EventSettings, EventTracker, top_confidence


def detections(confidence: float | None) -> sv.Detections:
    if confidence is None:
        return sv.Detections.empty()
    return sv.Detections(
        xyxy=np.array([[10, 10, 50, 50]], dtype=np.float32),
        confidence=np.array([confidence], dtype=np.float32),
        class_id=np.array([0]),
    )


def feed(tracker: EventTracker, fps: float, pattern: list[float | None]):
    """Feed one confidence (or None for no detection) per sampled frame; return all changes."""
    changes = []
    for index, confidence in enumerate(pattern):
        changes.extend(tracker.update(index / fps, detections(confidence), frame_index=index))
    changes.extend(tracker.finish())
    return changes


def test_quiet_video_has_no_event():
    tracker = EventTracker(EventSettings(), frame_interval=0.2)
    assert feed(tracker, 5, [None] * 50) == []
    assert tracker.events == []


def test_single_flicker_does_not_open():
    tracker = EventTracker(EventSettings(), frame_interval=0.2)
    pattern = [None] * 10 + [0.9] + [None] * 10 + [0.8] + [None] * 10
    assert feed(tracker, 5, pattern) == []


def test_onset_sustained_gap_end():
    settings = EventSettings(window_seconds=1.0, min_positive_fraction=0.6, close_after_seconds=2.0)
    tracker = EventTracker(settings, frame_interval=0.2)
    # 2 s quiet, 4 s positive with one missed frame, 4 s quiet; 5 frames per second.
    pattern = [None] * 10 + [0.5, 0.6, 0.7, 0.95, 0.6] + [None] + [0.6] * 14 + [None] * 20
    changes = feed(tracker, 5, pattern)

    assert [change.kind for change in changes] == ["opened", "closed"]
    event = tracker.events[0]
    assert event.start == pytest.approx(2.0)
    assert event.end == pytest.approx(6.0)  # The last positive frame at 5.8 s covers 0.2 s.
    assert event.peak_confidence == pytest.approx(0.95)
    assert event.peak_time == pytest.approx(2.6)
    assert event.peak_frame_index == 13
    assert event.positive_frames == 19
    assert event.sampled_frames == 20


def test_event_opens_when_window_fills():
    tracker = EventTracker(EventSettings(window_seconds=1.0, min_positive_fraction=0.6), frame_interval=0.2)
    opened_at = None
    for index in range(20):
        changes = tracker.update(index * 0.2, detections(0.7 if index >= 5 else None), frame_index=index)
        if changes:
            opened_at = index * 0.2
            break
    # The window contains 5 frames, so 3 positives are needed: frames 5, 6 and 7.
    assert opened_at == pytest.approx(1.4)
    assert tracker.current.start == pytest.approx(1.0)


def test_short_gap_keeps_one_event():
    tracker = EventTracker(EventSettings(close_after_seconds=2.0), frame_interval=0.2)
    pattern = [0.8] * 10 + [None] * 8 + [0.8] * 10  # A 1.6 s gap is shorter than close_after_seconds.
    changes = feed(tracker, 5, pattern)
    assert [change.kind for change in changes] == ["opened", "closed"]
    assert tracker.events[0].end == pytest.approx(28 * 0.2)


def test_long_gap_splits_events():
    tracker = EventTracker(EventSettings(close_after_seconds=2.0), frame_interval=0.2)
    pattern = [0.8] * 10 + [None] * 15 + [0.8] * 10
    feed(tracker, 5, pattern)
    assert len(tracker.events) == 2
    assert [event.event_id for event in tracker.events] == [1, 2]
    assert tracker.events[1].start == pytest.approx(25 * 0.2)


def test_event_closes_at_gap_not_at_end():
    tracker = EventTracker(EventSettings(close_after_seconds=1.0), frame_interval=0.2)
    changes = []
    for index in range(40):
        changes.extend(tracker.update(index * 0.2, detections(0.8 if index < 10 else None), frame_index=index))
    assert [change.kind for change in changes] == ["opened", "closed"]
    assert tracker.current is None


def test_finish_closes_open_event():
    tracker = EventTracker(EventSettings(), frame_interval=0.2)
    for index in range(10):
        tracker.update(index * 0.2, detections(0.8), frame_index=index)
    assert tracker.current is not None
    changes = tracker.finish()
    assert [change.kind for change in changes] == ["closed"]
    assert tracker.events[0].end == pytest.approx(2.0)


def test_low_confidence_detections_ignored():
    tracker = EventTracker(EventSettings(confidence=0.5), frame_interval=0.2)
    assert feed(tracker, 5, [0.3] * 20) == []


def test_slow_sample_rate_can_still_open():
    # At 1 frame per second a 1 s window contains one frame, so one positive frame must be enough.
    tracker = EventTracker(EventSettings(window_seconds=1.0, min_positive_frames=2), frame_interval=1.0)
    feed(tracker, 1, [None, 0.9, 0.9, None, None, None])
    assert len(tracker.events) == 1


def test_evidence_is_peak_frame():
    tracker = EventTracker(EventSettings(), frame_interval=0.2)
    for index, confidence in enumerate([0.5, 0.6, 0.9, 0.7, 0.6, None, None, None]):
        image = np.full((4, 4, 3), index, dtype=np.uint8)
        tracker.update(index * 0.2, detections(confidence), frame_index=index, image=image)
    tracker.finish()
    event = tracker.events[0]
    assert int(event.evidence_image[0, 0, 0]) == 2
    assert len(event.evidence_detections) == 1


def test_top_confidence_of_empty_detections():
    assert top_confidence(sv.Detections.empty()) == 0.0


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"window_seconds": 0}, "window_seconds"),
        ({"min_positive_fraction": 0}, "min_positive_fraction"),
        ({"min_positive_fraction": 1.5}, "min_positive_fraction"),
        ({"min_positive_frames": 0}, "min_positive_frames"),
        ({"close_after_seconds": -1}, "close_after_seconds"),
        ({"confidence": 2}, "confidence"),
    ],
)
def test_settings_reject_invalid_values(arguments, message):
    with pytest.raises(ValueError, match=message):
        EventSettings(**arguments)
