"""Batch video scanning: expand inputs, run one pipeline per video, write reports and a summary.

Layout under the output folder::

    summary.csv                       one row per input, rewritten after each video
    <stem>-<hash>/report.json         the video's report, written when the video is done
    <stem>-<hash>/evidence/*.jpg      the peak frame of each event, annotated
    <stem>-<hash>/annotated.mp4       with --annotate: H.264 video with boxes drawn
"""

from __future__ import annotations

import argparse
import csv
import glob
import hashlib
import io
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from detector.events import EventSettings, EventTracker
from detector.model import DEFAULT_CONFIDENCE, Detector, ModelError, ModelSettings
from detector.pipeline import Pipeline
from detector.sinks import (
    AnnotatedVideoWriter,
    EvidenceWriter,
    SinkError,
    SinkSet,
    check_output_folder,
    write_bytes_atomic,
    event_record,
    write_json,
)
from detector.sources import BufferPolicy, FrameReader, SourceError, VideoFileSource

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".mts", ".wmv", ".flv", ".3gp"}
)
REPORT_VERSION = 1
# A video counts as partial when fewer frames decode than this share of the container's frame count.
PARTIAL_DECODE_FRACTION = 0.98
SUMMARY_COLUMNS = [
    "input",
    "status",
    "events",
    "smoking_seconds",
    "max_confidence",
    "first_event_start_s",
    "duration_s",
    "frames_decoded",
    "frames_expected",
    "decoded_until_s",
    "report",
    "error",
]


@dataclass(frozen=True)
class ScanSettings:
    """Everything one scan run needs besides the inputs."""

    out_dir: Path
    sample_fps: float | None = 5.0
    batch_size: int = 4
    annotate: bool = False
    resume: bool = False
    events: EventSettings = field(default_factory=EventSettings)
    buffer_capacity: int = 32
    progress: bool = True


@dataclass
class InputProblem:
    """An input argument that names no scannable video."""

    input: str
    error: str


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[InputProblem]]:
    """Turn files, folders (searched recursively) and glob patterns into a sorted list of videos."""
    videos: list[Path] = []
    problems: list[InputProblem] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            found = sorted(item for item in path.rglob("*") if item.is_file() and item.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                problems.append(InputProblem(text, f"no video files found in folder (looked for {_suffix_list()})"))
            videos.extend(found)
        elif path.exists():
            videos.append(path)  # An explicit file is tried whatever its suffix, and fails clearly if not a video.
        elif glob.has_magic(text):
            found = sorted(Path(item) for item in glob.glob(text, recursive=True) if Path(item).is_file())
            found = [item for item in found if item.suffix.lower() in VIDEO_SUFFIXES]
            if not found:
                problems.append(InputProblem(text, "the pattern matches no video files"))
            videos.extend(found)
        else:
            problems.append(InputProblem(text, "file or folder not found"))

    unique: dict[Path, Path] = {}
    for video in videos:
        unique.setdefault(video.resolve(), video)
    return list(unique.values()), problems


def _suffix_list() -> str:
    return ", ".join(sorted(VIDEO_SUFFIXES))


def output_folder(out_dir: Path, video: Path) -> Path:
    """Return the video's own output folder: its stem plus a hash of its absolute path."""
    digest = hashlib.sha1(str(video.resolve()).encode("utf-8")).hexdigest()[:8]
    safe_stem = "".join(char if char.isalnum() or char in "-_." else "_" for char in video.stem)[:80]
    return Path(out_dir) / f"{safe_stem}-{digest}"


def _input_fingerprint(video: Path) -> dict[str, Any]:
    stat = video.stat()
    return {"size_bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def load_complete_report(report_path: Path, video: Path, settings_key: dict[str, Any]) -> dict[str, Any] | None:
    """Return a previous report if it is complete, its input unchanged and its settings the same, else None."""
    import json

    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if report.get("report_version") != REPORT_VERSION or report.get("status") not in {"ok", "partial"}:
        return None
    if report.get("settings_key") != settings_key:
        return None
    try:
        if report.get("input_file") != _input_fingerprint(video):
            return None
    except OSError:
        return None
    return report


class Scanner:
    """Scan videos one after another with one loaded model."""

    def __init__(self, detector: Detector, settings: ScanSettings) -> None:
        self.detector = detector
        self.settings = settings
        self.rows: list[dict[str, Any]] = []

    def scan_all(self, videos: list[Path], problems: list[InputProblem]) -> list[dict[str, Any]]:
        """Scan every video, writing the summary after each; return one summary row per input."""
        out_dir = Path(self.settings.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for problem in problems:
            logger.error("%s: %s", problem.input, problem.error)
            self.rows.append(_failed_row(problem.input, problem.error))
        self.write_summary()

        overall = tqdm(videos, desc="videos", unit="video", disable=not self.settings.progress or len(videos) < 2)
        with logging_redirect_tqdm():
            for video in overall:
                try:
                    row = self.scan_one(video)
                except KeyboardInterrupt:
                    self.rows.append(_failed_row(str(video), "interrupted before the scan finished", "interrupted"))
                    self.write_summary()
                    raise
                self.rows.append(row)
                self.write_summary()
        overall.close()
        return self.rows

    def scan_one(self, video: Path) -> dict[str, Any]:
        """Scan one video and write its report; failures go into the report, only KeyboardInterrupt is raised."""
        folder = output_folder(self.settings.out_dir, video)
        report_path = folder / "report.json"
        settings_key = self._settings_key()
        if self.settings.resume:
            previous = load_complete_report(report_path, video, settings_key)
            if previous is not None:
                logger.info("%s: report complete, skipped (--resume)", video)
                return summary_row(previous, report_path)

        started = time.time()
        report: dict[str, Any] = {
            "report_version": REPORT_VERSION,
            "input": str(video),
            "status": "failed",
            "error": None,
            "started_at": _utc_iso(started),
            "model": self.detector.describe(),
            "sampling": {"sample_fps": self.settings.sample_fps, "batch_size": self.settings.batch_size},
            "thresholds": _thresholds(self.detector, self.settings.events),
            "settings_key": settings_key,
            "events": [],
        }
        try:
            report["input_file"] = _input_fingerprint(video)
            self._run_pipeline(video, folder, report)
        except (SourceError, SinkError, ModelError, OSError) as error:
            report["status"] = "failed"
            report["error"] = str(error)
            logger.error("%s", _with_input(video, error))
        except Exception as error:  # An unforeseen decoder or library failure must not end the whole run.
            report["status"] = "failed"
            report["error"] = f"unexpected error: {type(error).__name__}: {error}"
            logger.error("%s: %s", video, report["error"])
            logger.debug("traceback of the failure on %s", video, exc_info=True)
        finally:
            report["finished_at"] = _utc_iso(time.time())
            report["processing_seconds"] = round(time.time() - started, 3)

        try:
            write_json(report_path, report)
        except SinkError as error:
            logger.error("%s", error)
            report["status"] = "failed"
            report["error"] = f"report not written: {error}"
        return summary_row(report, report_path)

    def _settings_key(self) -> dict[str, Any]:
        """Return what decides a report's content, so --resume redoes videos scanned differently."""
        model = self.detector.describe()
        return {
            "weights": str(model.get("weights")),
            "imgsz": model.get("imgsz"),
            "sample_fps": self.settings.sample_fps,
            "annotate": self.settings.annotate,
            "thresholds": _thresholds(self.detector, self.settings.events),
        }

    def _run_pipeline(self, video: Path, folder: Path, report: dict[str, Any]) -> None:
        settings = self.settings
        source = VideoFileSource(video, sample_fps=settings.sample_fps, deliver_all=settings.annotate)
        info = source.info
        report["video"] = {
            "width": info.width,
            "height": info.height,
            "codec": info.codec,
            "fps": round(info.fps, 3),
            "fps_from_metadata": info.fps_from_metadata,
            "duration_s": round(info.duration, 3) if info.duration is not None else None,
            "frames_expected": info.frames_expected,
            "creation_time": info.creation_time,
        }

        sinks = SinkSet()
        evidence = EvidenceWriter(folder / "evidence", names=self.detector.names)
        sinks.add(evidence)
        video_writer = None
        if settings.annotate:
            video_writer = AnnotatedVideoWriter(folder / "annotated.mp4", fps=info.fps, names=self.detector.names)
            sinks.add(video_writer)

        interval = None if settings.sample_fps is None else 1.0 / settings.sample_fps
        tracker = EventTracker(settings.events, source_id=str(video), frame_interval=interval or 1.0 / info.fps)
        reader = FrameReader(source, BufferPolicy.KEEP_ALL, capacity=settings.buffer_capacity)
        progress = tqdm(
            total=info.frames_expected,
            desc=video.name[:40],
            unit="frame",
            leave=False,
            disable=not settings.progress,
        )
        last_index = [-1]

        def advance(frame) -> None:
            progress.update(frame.index - last_index[0])
            last_index[0] = frame.index

        pipeline = Pipeline(reader, self.detector, tracker, sinks, batch_size=settings.batch_size, on_frame=advance)
        try:
            stats = pipeline.run()
        except BaseException:
            # Interrupted or failed: an unfinished video must not appear under its final name.
            sinks.abort()
            raise
        else:
            sinks.close()
        finally:
            progress.close()

        decoded = source.stats
        report["video"]["rotation"] = info.rotation
        if info.rotation % 180:
            # Width and height as displayed, after the rotation frames were turned by.
            report["video"]["width"], report["video"]["height"] = info.height, info.width
        report["video"]["fps"] = round(info.fps, 3)
        report["frames"] = {
            "decoded": decoded.frames_decoded,
            "sampled": decoded.frames_sampled,
            "expected": info.frames_expected,
            "decoded_until_s": round(decoded.last_timestamp or 0.0, 3),
        }
        report["timing"] = {
            "wall_seconds": round(stats.wall_seconds, 3),
            "inference_seconds": round(stats.inference_seconds, 3),
            "inferred_fps": round(stats.inferred_fps, 2),
        }
        report["events"] = [
            _event_with_clock(event_record(event, evidence.paths.get(event.event_id), folder), info.creation_time)
            for event in tracker.events
        ]
        if video_writer is not None and video_writer.frames_written and not sinks.errors:
            report["annotated_video"] = str((folder / "annotated.mp4").relative_to(folder))

        partial_reason = _partial_reason(decoded, info)
        if sinks.errors:
            report["status"] = "failed"
            report["error"] = "; ".join(sinks.errors)
            logger.error("%s: output could not be written: %s", video, report["error"])
        elif partial_reason:
            report["status"] = "partial"
            report["error"] = partial_reason
            logger.warning("%s: partial scan: %s", video, partial_reason)
        else:
            report["status"] = "ok"
        logger.info(
            "%s: %s, %d event(s), %d frames decoded", video, report["status"], len(report["events"]), decoded.frames_decoded
        )

    def write_summary(self) -> None:
        """Rewrite summary.csv with every row so far."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        try:
            write_bytes_atomic(Path(self.settings.out_dir) / "summary.csv", buffer.getvalue().encode("utf-8"))
        except SinkError as error:
            logger.error("%s", error)
            raise


def _partial_reason(decoded, info) -> str | None:
    frames_expected = info.frames_expected
    until = decoded.last_timestamp or 0.0
    if decoded.corrupt_packets:
        return (
            f"{decoded.corrupt_packets} damaged packets skipped ({decoded.first_corruption}); "
            f"{decoded.frames_decoded} of {frames_expected or 'an unknown number of'} frames decoded, up to {until:.2f} s"
        )
    if decoded.error:
        return (
            f"decoding stopped at {until:.2f} s after {decoded.frames_decoded} of "
            f"{frames_expected if frames_expected else 'an unknown number of'} frames: {decoded.error}"
        )
    if info.frames_counted and frames_expected and decoded.frames_decoded < PARTIAL_DECODE_FRACTION * frames_expected:
        return f"only {decoded.frames_decoded} of {frames_expected} frames decoded, up to {until:.2f} s"
    if not info.frames_counted and info.duration and until < PARTIAL_DECODE_FRACTION * info.duration - 2 / info.fps:
        return f"decoding ended at {until:.2f} s of {info.duration:.2f} s ({decoded.frames_decoded} frames)"
    return None


def _with_input(video: Path, error: Exception) -> str:
    text = str(error)
    return text if text.startswith(str(video)) else f"{video}: {text}"


def _thresholds(detector: Detector, events: EventSettings) -> dict[str, Any]:
    return {
        "detection_confidence": detector.settings.confidence,
        "event_confidence": events.confidence,
        "window_s": events.window_seconds,
        "min_positive_fraction": events.min_positive_fraction,
        "min_positive_frames": events.min_positive_frames,
        "close_after_s": events.close_after_seconds,
    }


def _event_with_clock(record: dict[str, Any], creation_time: str | None) -> dict[str, Any]:
    """Add wall-clock start and end times when the container records when it was made."""
    if not creation_time:
        return record
    try:
        origin = datetime.fromisoformat(creation_time.replace("Z", "+00:00"))
    except ValueError:
        return record
    if origin.tzinfo is None:
        origin = origin.replace(tzinfo=timezone.utc)
    record["start_utc"] = (origin + timedelta(seconds=record["start_s"])).isoformat()
    record["end_utc"] = (origin + timedelta(seconds=record["end_s"])).isoformat()
    return record


def _utc_iso(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, tz=timezone.utc).isoformat(timespec="seconds")


def summary_row(report: dict[str, Any], report_path: Path) -> dict[str, Any]:
    """Return the summary CSV row of one report."""
    events = report.get("events") or []
    frames = report.get("frames") or {}
    video = report.get("video") or {}
    return {
        "input": report.get("input"),
        "status": report.get("status"),
        "events": len(events),
        "smoking_seconds": round(sum(event["duration_s"] for event in events), 3),
        "max_confidence": max((event["peak_confidence"] for event in events), default=""),
        "first_event_start_s": events[0]["start_s"] if events else "",
        "duration_s": video.get("duration_s", ""),
        "frames_decoded": frames.get("decoded", ""),
        "frames_expected": frames.get("expected", ""),
        "decoded_until_s": frames.get("decoded_until_s", ""),
        "report": str(report_path),
        "error": report.get("error") or "",
    }


def _failed_row(input_text: str, error: str, status: str = "failed") -> dict[str, Any]:
    return {"input": input_text, "status": status, "events": 0, "error": error}


def add_scan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="video files, folders (searched recursively) or globs")
    parser.add_argument("--out", default="scan-results", help="output folder for reports; default: %(default)s")
    parser.add_argument(
        "--sample-fps",
        default="5",
        help="frames per second of video time sent to the model, or 'all' (or 0) for every frame; default: %(default)s",
    )
    parser.add_argument("--batch", type=int, default=4, help="frames per inference batch; default: %(default)s")
    parser.add_argument("--annotate", action="store_true", help="also write an annotated H.264 MP4 per video")
    parser.add_argument("--resume", action="store_true", help="skip videos whose report is complete and unchanged")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    defaults = EventSettings()
    parser.add_argument(
        "--event-window",
        type=float,
        default=defaults.window_seconds,
        help="seconds of video in which positive frames are counted to open an event; default: %(default)s",
    )
    parser.add_argument(
        "--event-min-fraction",
        type=float,
        default=defaults.min_positive_fraction,
        help="share of sampled frames in the window that must show a cigarette; default: %(default)s",
    )
    parser.add_argument(
        "--event-gap",
        type=float,
        default=defaults.close_after_seconds,
        help="seconds without a cigarette that close an event; default: %(default)s",
    )


def parse_sample_fps(text: str) -> float | None:
    """Parse ``--sample-fps``: a positive number, or ``all`` for every frame."""
    if text.strip().lower() in {"all", "0"}:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"invalid --sample-fps {text!r}: use a positive number or 'all'") from None
    if not value > 0:
        raise ValueError(f"invalid --sample-fps {text!r}: use a positive number or 'all'")
    return value


def _usage(build, *arguments, option: str | None = None, **keywords):
    """Call ``build``; turn its ValueError into a UsageError that names the command-line option."""
    from detector.cli import UsageError

    try:
        return build(*arguments, **keywords)
    except ValueError as error:
        raise UsageError(f"invalid {option}: {error}" if option else str(error)) from error


def run_scan_command(arguments: argparse.Namespace) -> int:
    """Run ``smokedet scan``; return 0 when every input was scanned (partial scans included), 1 when any failed."""
    from detector.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError

    sample_fps = _usage(parse_sample_fps, arguments.sample_fps)
    events = _usage(
        EventSettings,
        window_seconds=arguments.event_window,
        min_positive_fraction=arguments.event_min_fraction,
        close_after_seconds=arguments.event_gap,
        option="--event-window, --event-min-fraction or --event-gap",
    )
    model_settings = _usage(
        ModelSettings,
        weights=Path(arguments.weights),
        device=arguments.device,
        imgsz=arguments.imgsz,
        confidence=DEFAULT_CONFIDENCE if arguments.conf is None else arguments.conf,
        threads=arguments.threads,
        option="--imgsz or --conf",
    )
    if arguments.batch < 1:
        raise UsageError(f"invalid --batch {arguments.batch}: use 1 or more")

    problem = check_output_folder(Path(arguments.out))
    if problem:
        logger.error("%s", problem)
        return EXIT_USAGE

    videos, problems = expand_inputs(arguments.inputs)
    settings = ScanSettings(
        out_dir=Path(arguments.out),
        sample_fps=sample_fps,
        batch_size=arguments.batch,
        annotate=arguments.annotate,
        resume=arguments.resume,
        events=events,
        progress=not arguments.no_progress,
    )
    try:
        detector = Detector(model_settings)
        detector.warmup()
    except ModelError as error:
        logger.error("%s", error)
        return EXIT_FAILED

    try:
        rows = Scanner(detector, settings).scan_all(videos, problems)
    except SinkError:
        return EXIT_FAILED
    failed = [row for row in rows if row["status"] == "failed"]
    partial = [row for row in rows if row["status"] == "partial"]
    logger.info(
        "scanned %d input(s): %d ok, %d partial, %d failed; summary in %s",
        len(rows),
        len(rows) - len(failed) - len(partial),
        len(partial),
        len(failed),
        Path(arguments.out) / "summary.csv",
    )
    return EXIT_FAILED if failed else EXIT_OK
