"""The scan command on generated videos: report format, events, bad inputs, outputs, resume."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import av
import pytest

from detector.events import EventSettings
from detector.scan import (
    REPORT_VERSION,
    ScanSettings,
    Scanner,
    expand_inputs,
    output_folder,
    parse_sample_fps,
)
from detector.synthetic import write_video
from tests.conftest import FakeDetector, marker_frames


def scan(tmp_path: Path, inputs: list[str], **overrides):
    settings = ScanSettings(out_dir=tmp_path / "out", progress=False, **overrides)
    videos, problems = expand_inputs(inputs)
    detector = overrides.pop("detector", None) or FakeDetector()
    rows = Scanner(detector, settings).scan_all(videos, problems)
    return rows, settings.out_dir


def read_summary(out_dir: Path) -> list[dict[str, str]]:
    with open(out_dir / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def read_report(out_dir: Path, video: Path) -> dict:
    return json.loads((output_folder(out_dir, video) / "report.json").read_text())


@pytest.fixture
def smoking_clip(tmp_path) -> Path:
    """Twenty seconds at 30 fps with a marker from 5 s to 9 s and from 14 s to 16 s."""
    return write_video(tmp_path / "videos" / "smoking.mp4", marker_frames(20, 30, [(5, 9), (14, 16)]), fps=30)


@pytest.fixture
def quiet_clip(tmp_path) -> Path:
    return write_video(tmp_path / "videos" / "quiet.mp4", marker_frames(6, 25, []), fps=25)


def test_scan_finds_events_at_right_times(tmp_path, smoking_clip):
    rows, out_dir = scan(tmp_path, [str(smoking_clip)])
    report = read_report(out_dir, smoking_clip)

    assert rows[0]["status"] == "ok"
    events = report["events"]
    assert len(events) == 2
    assert events[0]["start_s"] == pytest.approx(5.0, abs=0.21)
    assert events[0]["end_s"] == pytest.approx(9.0, abs=0.21)
    assert events[1]["start_s"] == pytest.approx(14.0, abs=0.21)
    assert events[1]["end_s"] == pytest.approx(16.0, abs=0.21)
    assert events[0]["start"] == "00:00:05.000"
    assert events[0]["peak_confidence"] == pytest.approx(0.9)


def test_report_format(tmp_path, smoking_clip):
    _, out_dir = scan(tmp_path, [str(smoking_clip)])
    report = read_report(out_dir, smoking_clip)
    folder = output_folder(out_dir, smoking_clip)

    assert report["report_version"] == REPORT_VERSION
    assert report["input"] == str(smoking_clip)
    assert report["status"] == "ok"
    assert report["error"] is None
    assert report["video"]["fps"] == pytest.approx(30)
    assert report["video"]["duration_s"] == pytest.approx(20, abs=0.05)
    assert report["video"]["width"] == 320
    assert report["frames"]["decoded"] == 600
    assert report["frames"]["expected"] == 600
    assert report["frames"]["sampled"] == 100
    assert report["sampling"]["sample_fps"] == 5.0
    assert report["model"]["weights"] == "fake"
    assert set(report["thresholds"]) >= {"window_s", "min_positive_fraction", "close_after_s", "detection_confidence"}
    event = report["events"][0]
    assert set(event) >= {"id", "start_s", "end_s", "start", "end", "peak_confidence", "peak_s", "evidence"}
    evidence = folder / event["evidence"]
    assert evidence.is_file()
    assert evidence.read_bytes()[:2] == b"\xff\xd8"  # JPEG start-of-image marker.


def test_summary_csv_has_one_row_per_input(tmp_path, smoking_clip, quiet_clip):
    scan(tmp_path, [str(tmp_path / "videos")])
    rows = read_summary(tmp_path / "out")
    by_name = {Path(row["input"]).name: row for row in rows}
    assert set(by_name) == {"smoking.mp4", "quiet.mp4"}
    assert by_name["smoking.mp4"]["events"] == "2"
    assert by_name["quiet.mp4"]["events"] == "0"
    assert by_name["quiet.mp4"]["status"] == "ok"


def test_every_frame_sampling(tmp_path, smoking_clip):
    _, out_dir = scan(tmp_path, [str(smoking_clip)], sample_fps=None)
    report = read_report(out_dir, smoking_clip)
    assert report["frames"]["sampled"] == 600
    assert report["events"][0]["start_s"] == pytest.approx(5.0, abs=0.04)


def test_batches_are_full_size(tmp_path, smoking_clip):
    detector = FakeDetector()
    settings = ScanSettings(out_dir=tmp_path / "out", progress=False, batch_size=8)
    Scanner(detector, settings).scan_all([smoking_clip], [])
    assert detector.batches[:-1] == [8] * (len(detector.batches) - 1)
    assert sum(detector.batches) == 100


def test_bad_inputs_fail_alone(tmp_path, smoking_clip):
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a video")
    fake_mp4 = tmp_path / "fake.mp4"
    fake_mp4.write_bytes(os.urandom(4096))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(smoking_clip.read_bytes()[:20_000])

    inputs = [str(tmp_path / "missing.mp4"), str(empty_dir), str(text_file), str(fake_mp4), str(truncated)]
    rows, out_dir = scan(tmp_path, inputs + [str(smoking_clip)])
    statuses = {Path(row["input"]).name: row["status"] for row in rows}
    errors = {Path(row["input"]).name: row["error"] for row in rows}

    assert statuses == {
        "missing.mp4": "failed",
        "empty": "failed",
        "notes.txt": "failed",
        "fake.mp4": "failed",
        "truncated.mp4": "failed",
        "smoking.mp4": "ok",
    }
    assert "not found" in errors["missing.mp4"]
    assert "no video files" in errors["empty"]
    assert "not a readable video" in errors["notes.txt"]
    assert "truncated.mp4" in errors["truncated.mp4"]
    assert len(read_summary(out_dir)) == 6


def test_partial_decode_is_reported(tmp_path):
    path = write_video(tmp_path / "faststart.mp4", marker_frames(10, 30, [(1, 3)]), fps=30, faststart=True)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    rows, out_dir = scan(tmp_path, [str(cut)])
    report = read_report(out_dir, cut)
    assert rows[0]["status"] == "partial"
    assert report["status"] == "partial"
    assert 0 < report["frames"]["decoded"] < 300
    assert 0 < report["frames"]["decoded_until_s"] < 10
    assert "300" in report["error"]
    assert len(report["events"]) == 1  # The part that decoded was still scanned.


def test_rotated_video_report(tmp_path):
    path = write_video(tmp_path / "phone.mp4", marker_frames(3, 30, [], size=(320, 180)), fps=30, rotation=-90)
    _, out_dir = scan(tmp_path, [str(path)])
    report = read_report(out_dir, path)
    assert report["status"] == "ok"
    assert report["video"]["rotation"] == -90


def test_annotated_video_is_h264_with_every_frame(tmp_path, smoking_clip):
    _, out_dir = scan(tmp_path, [str(smoking_clip)], annotate=True)
    report = read_report(out_dir, smoking_clip)
    video = output_folder(out_dir, smoking_clip) / report["annotated_video"]
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        frames = sum(1 for _ in container.decode(stream))
    assert frames == 600


def test_unopenable_video_writer_fails_the_video(tmp_path, smoking_clip):
    folder = output_folder(tmp_path / "out", smoking_clip)
    (folder / ".annotated.partial.mp4").mkdir(parents=True)  # A folder where the writer's file must go.
    rows, out_dir = scan(tmp_path, [str(smoking_clip)], annotate=True)
    report = read_report(out_dir, smoking_clip)
    assert rows[0]["status"] == "failed"
    assert "annotated.mp4" in report["error"]
    assert len(report["events"]) == 2  # Events were still found and reported.


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full to simulate a full disk")
def test_full_disk_for_report_is_an_error(tmp_path, smoking_clip):
    folder = output_folder(tmp_path / "out", smoking_clip)
    folder.mkdir(parents=True)
    (folder / ".report.json.partial").symlink_to("/dev/full")
    rows, out_dir = scan(tmp_path, [str(smoking_clip)])
    assert rows[0]["status"] == "failed"
    assert "report not written" in rows[0]["error"]
    assert not (folder / "report.json").exists()
    assert read_summary(out_dir)[0]["status"] == "failed"


def test_resume_skips_complete_reports(tmp_path, smoking_clip, quiet_clip):
    scan(tmp_path, [str(tmp_path / "videos")])
    detector = FakeDetector()
    settings = ScanSettings(out_dir=tmp_path / "out", progress=False, resume=True)
    rows = Scanner(detector, settings).scan_all(*expand_inputs([str(tmp_path / "videos")]))
    assert detector.batches == []
    assert {row["status"] for row in rows} == {"ok"}
    assert len(read_summary(tmp_path / "out")) == 2


def test_resume_rescans_changed_or_incomplete(tmp_path, smoking_clip, quiet_clip):
    scan(tmp_path, [str(tmp_path / "videos")])
    report_path = output_folder(tmp_path / "out", quiet_clip) / "report.json"
    report_path.write_text(report_path.read_text()[:50])  # A torn report, as after a crash.
    write_video(smoking_clip, marker_frames(4, 30, [(1, 3)]), fps=30)  # The input changed.

    detector = FakeDetector()
    settings = ScanSettings(out_dir=tmp_path / "out", progress=False, resume=True)
    Scanner(detector, settings).scan_all(*expand_inputs([str(tmp_path / "videos")]))
    assert sum(detector.batches) == 20 + 30  # 4 s and 6 s at 5 frames per second.
    assert read_report(tmp_path / "out", smoking_clip)["frames"]["decoded"] == 120


def test_expand_inputs_globs_folders_and_duplicates(tmp_path, smoking_clip, quiet_clip):
    nested = tmp_path / "videos" / "deep" / "er"
    write_video(nested / "third.MOV", marker_frames(1, 10, []), fps=10)
    (tmp_path / "videos" / "readme.txt").write_text("x")

    videos, problems = expand_inputs([str(tmp_path / "videos"), str(smoking_clip), str(tmp_path / "videos" / "*.mp4")])
    assert problems == []
    assert sorted(video.name for video in videos) == ["quiet.mp4", "smoking.mp4", "third.MOV"]

    videos, problems = expand_inputs([str(tmp_path / "nothing-*.mp4")])
    assert videos == []
    assert "matches no video" in problems[0].error


def test_output_folders_differ_for_same_stem(tmp_path):
    first = output_folder(tmp_path, tmp_path / "a" / "cam.mp4")
    second = output_folder(tmp_path, tmp_path / "b" / "cam.mp4")
    assert first != second
    assert first.name.startswith("cam-")


@pytest.mark.parametrize("text, expected", [("5", 5.0), ("0.5", 0.5), ("all", None), ("ALL", None)])
def test_parse_sample_fps(text, expected):
    assert parse_sample_fps(text) == expected


@pytest.mark.parametrize("text", ["-1", "fast", "nan"])
def test_parse_sample_fps_rejects(text):
    with pytest.raises(ValueError, match="--sample-fps"):
        parse_sample_fps(text)


def test_event_settings_reach_report(tmp_path, smoking_clip):
    events = EventSettings(window_seconds=2.0, close_after_seconds=6.0)
    _, out_dir = scan(tmp_path, [str(smoking_clip)], events=events)
    report = read_report(out_dir, smoking_clip)
    assert report["thresholds"]["window_s"] == 2.0
    assert len(report["events"]) == 1  # A 6 s gap bridges the 5 s between the two marked stretches.


def test_variable_frame_rate_annotates(tmp_path):
    """Frames 1/30 s apart, then 1/10 s apart: the annotated video keeps every frame and the timing."""
    from fractions import Fraction

    path = tmp_path / "vfr.mkv"
    container = av.open(str(path), mode="w")
    stream = container.add_stream("libx264", rate=30)
    stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
    stream.time_base = Fraction(1, 1000)
    timestamps = [index / 30 for index in range(60)] + [2 + index / 10 for index in range(20)]
    images = list(marker_frames(4, 20, [(1, 3)]))
    for number, timestamp in enumerate(timestamps):
        frame = av.VideoFrame.from_ndarray(images[min(int(timestamp * 20), 79)], format="bgr24")
        frame.pts, frame.time_base = int(round(timestamp * 1000)), Fraction(1, 1000)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    container.close()

    rows, out_dir = scan(tmp_path, [str(path)], annotate=True)
    assert rows[0]["status"] == "ok", rows[0]["error"]
    video = output_folder(out_dir, path) / "annotated.mp4"
    with av.open(str(video)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 80
    assert float(frames[-1].time) == pytest.approx(3.9, abs=0.05)


def test_interrupted_scan_leaves_no_partial_video(tmp_path, smoking_clip, monkeypatch):
    from detector.pipeline import Pipeline

    original = Pipeline._process
    calls = []

    def interrupt_later(self, pending):
        calls.append(len(pending))
        if len(calls) == 5:
            raise KeyboardInterrupt
        return original(self, pending)

    monkeypatch.setattr(Pipeline, "_process", interrupt_later)
    with pytest.raises(KeyboardInterrupt):
        scan(tmp_path, [str(smoking_clip)], annotate=True)
    folder = output_folder(tmp_path / "out", smoking_clip)
    assert not (folder / "annotated.mp4").exists()
    assert not (folder / ".annotated.partial.mp4").exists()
    assert not (folder / "report.json").exists()
    summary = read_summary(tmp_path / "out")
    assert summary[0]["status"] == "interrupted"


def test_resume_rescans_with_changed_settings(tmp_path, smoking_clip):
    scan(tmp_path, [str(smoking_clip)])
    detector = FakeDetector()
    settings = ScanSettings(out_dir=tmp_path / "out", progress=False, resume=True, sample_fps=2.0)
    Scanner(detector, settings).scan_all([smoking_clip], [])
    assert sum(detector.batches) == 40  # 20 s at the new rate of 2 frames per second.

    detector = FakeDetector()
    settings = ScanSettings(out_dir=tmp_path / "out", progress=False, resume=True, sample_fps=2.0, annotate=True)
    Scanner(detector, settings).scan_all([smoking_clip], [])
    assert sum(detector.batches) == 40
    assert (output_folder(tmp_path / "out", smoking_clip) / "annotated.mp4").is_file()


def test_rotated_video_reports_displayed_size(tmp_path):
    path = write_video(tmp_path / "phone.mp4", marker_frames(1, 30, [], size=(320, 180)), fps=30, rotation=90)
    _, out_dir = scan(tmp_path, [str(path)])
    report = read_report(out_dir, path)
    assert (report["video"]["width"], report["video"]["height"]) == (180, 320)


def test_output_folder_problems(tmp_path):
    from detector.sinks import check_output_folder

    a_file = tmp_path / "taken"
    a_file.write_text("x")
    assert "is a file; pass a folder" in check_output_folder(a_file)
    assert "cannot create the folder" in check_output_folder(a_file / "below")
    assert check_output_folder(tmp_path / "fresh" / "nested") is None


def test_unexpected_error_fails_one_video_only(tmp_path, smoking_clip, quiet_clip):
    class BrokenOnQuiet(FakeDetector):
        def detect(self, frames):
            # The first video takes 25 batches (100 sampled frames in fours); every later call fails.
            if len(self.batches) >= 25:
                raise RuntimeError("simulated library failure")
            return super().detect(frames)

    videos, problems = expand_inputs([str(smoking_clip), str(quiet_clip)])
    settings = ScanSettings(out_dir=tmp_path / "out", progress=False)
    rows = Scanner(BrokenOnQuiet(), settings).scan_all(videos, problems)
    statuses = {Path(row["input"]).name: row["status"] for row in rows}
    assert statuses == {"smoking.mp4": "ok", "quiet.mp4": "failed"}
    assert "simulated library failure" in read_summary(tmp_path / "out")[1]["error"]
