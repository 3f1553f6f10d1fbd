"""Benchmark the scan pipeline against the plain Ultralytics loop and the model alone.

On one generated video (default 60 s, 1280x720, 30 fps, H.264) it measures, in
one run and with the same weights, image size and frame sampling:

1. the plain Ultralytics loop, ``model.predict(source, stream=True, vid_stride=N)``,
   with Ultralytics' own thread settings;
2. this project's pipeline (decode thread, sampling, batching, events, sinks);
3. the model alone on frames decoded beforehand, with the pipeline's thread
   settings: the upper bound for the pipeline.

It prints sampled frames per second of each and the ratios. Usage::

    python scripts/bench_scan.py [--seconds 60] [--batch 4] [--threads 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.events import EventTracker  # noqa: E402
from detector.model import DEFAULT_WEIGHTS, Detector, ModelSettings  # noqa: E402
from detector.pipeline import Pipeline  # noqa: E402
from detector.sinks import SinkSet  # noqa: E402
from detector.sources import BufferPolicy, FrameReader, VideoFileSource  # noqa: E402
from detector.synthetic import moving_pattern, write_video  # noqa: E402


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60, help="length of the generated video in seconds")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=float, default=30, help="frame rate of the generated video")
    parser.add_argument("--sample-fps", type=float, default=5, help="frames per second of video sent to the model")
    parser.add_argument("--batch", type=int, default=4, help="pipeline batch size")
    parser.add_argument("--threads", type=int, default=0, help="pipeline PyTorch threads; 0 uses every core but one, as the scan command does")
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--imgsz", type=int, default=416)
    parser.add_argument("--video", help="use this video instead of generating one")
    parser.add_argument("--skip-plain", action="store_true", help="skip the plain Ultralytics loop")
    return parser.parse_args()


def generated_video(arguments: argparse.Namespace) -> Path:
    name = f"bench-{arguments.width}x{arguments.height}-{arguments.fps:g}fps-{arguments.seconds:g}s.mp4"
    path = Path(tempfile.gettempdir()) / "smokedet-bench" / name
    if not path.exists():
        started = time.perf_counter()
        frame_count = int(arguments.seconds * arguments.fps)
        frames = (moving_pattern(arguments.width, arguments.height, index) for index in range(frame_count))
        write_video(path, frames, fps=arguments.fps)
        print(f"generated {path} in {time.perf_counter() - started:.1f} s")
    return path


def run_plain_ultralytics(video: Path, arguments: argparse.Namespace, stride: int) -> tuple[int, float]:
    """Run Ultralytics' own streaming loop; it sets its own thread count when it selects the CPU."""
    from ultralytics import YOLO

    model = YOLO(arguments.weights, task="detect")
    model.predict(
        source=moving_pattern(arguments.width, arguments.height, 0), imgsz=arguments.imgsz, device="cpu", verbose=False
    )
    import torch

    threads = torch.get_num_threads()
    started = time.perf_counter()
    count = 0
    for _ in model.predict(
        source=str(video), stream=True, vid_stride=stride, imgsz=arguments.imgsz, device="cpu", verbose=False
    ):
        count += 1
    elapsed = time.perf_counter() - started
    print(f"plain Ultralytics loop: {count} frames in {elapsed:.1f} s with {threads} PyTorch thread(s)")
    return count, elapsed


def run_pipeline(video: Path, detector: Detector, arguments: argparse.Namespace) -> tuple[int, float]:
    source = VideoFileSource(video, sample_fps=arguments.sample_fps)
    tracker = EventTracker(source_id=str(video), frame_interval=1 / arguments.sample_fps)
    reader = FrameReader(source, BufferPolicy.KEEP_ALL, capacity=32)
    started = time.perf_counter()
    stats = Pipeline(reader, detector, tracker, SinkSet(), batch_size=arguments.batch).run()
    elapsed = time.perf_counter() - started
    print(
        f"pipeline: {stats.frames_inferred} frames in {elapsed:.1f} s with {detector.threads} PyTorch thread(s), "
        f"batch {arguments.batch} ({stats.inference_seconds:.1f} s of it in the model)"
    )
    return stats.frames_inferred, elapsed


def run_model_alone(video: Path, detector: Detector, arguments: argparse.Namespace) -> tuple[int, float]:
    frames = [frame.image for frame in VideoFileSource(video, sample_fps=arguments.sample_fps).frames()]
    started = time.perf_counter()
    for start in range(0, len(frames), arguments.batch):
        detector.detect(frames[start : start + arguments.batch])
    elapsed = time.perf_counter() - started
    print(f"model alone on decoded frames: {len(frames)} frames in {elapsed:.1f} s")
    return len(frames), elapsed


def main() -> int:
    arguments = parse_arguments()
    video = Path(arguments.video) if arguments.video else generated_video(arguments)
    stride = max(1, round(arguments.fps / arguments.sample_fps))
    print(f"video {video}, sampling {arguments.sample_fps:g} frames/s (plain loop: vid_stride={stride}), cores {os.cpu_count()}")

    results: dict[str, float] = {}
    if not arguments.skip_plain:
        count, elapsed = run_plain_ultralytics(video, arguments, stride)
        results["plain"] = count / elapsed

    detector = Detector(ModelSettings(weights=Path(arguments.weights), imgsz=arguments.imgsz, threads=arguments.threads))
    detector.warmup((arguments.height, arguments.width))
    count, elapsed = run_pipeline(video, detector, arguments)
    results["pipeline"] = count / elapsed
    count, elapsed = run_model_alone(video, detector, arguments)
    results["model_alone"] = count / elapsed

    print()
    print(f"{'run':<28}{'frames/s':>10}")
    for name, value in results.items():
        print(f"{name:<28}{value:>10.2f}")
    if "plain" in results:
        print(f"pipeline / plain Ultralytics: {results['pipeline'] / results['plain']:.2f}x")
    print(f"pipeline / model alone:       {results['pipeline'] / results['model_alone']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
