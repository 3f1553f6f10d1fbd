"""Show that ``smokedet watch`` keeps its lag bounded and its memory flat when the stream outpaces the model.

A thread serves generated 1280x720 frames as an MJPEG stream on 127.0.0.1 at
``--fps`` (60 by default). One Watcher reads it with the real detector, which
on a CPU processes far fewer frames per second, so frames must be dropped. The
script prints lag percentiles (capture to end of processing) and the process RSS
every ``--interval`` seconds, and a summary at the end.

    python scripts/bench_watch.py --minutes 2
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from livefakes import MjpegServer  # noqa: E402

from detector.model import Detector, ModelSettings  # noqa: E402
from detector.synthetic import moving_pattern  # noqa: E402
from detector.watch import CameraSpec, Watcher, WatchSettings  # noqa: E402


def percentiles(values: list[float]) -> str:
    if not values:
        return "no frame"
    p50, p95, p99 = np.percentile(np.array(values) * 1000, [50, 95, 99])
    return f"p50 {p50:6.0f} ms  p95 {p95:6.0f} ms  p99 {p99:6.0f} ms  max {1000 * max(values):6.0f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to run; default: %(default)s")
    parser.add_argument("--fps", type=float, default=60.0, help="frames per second the stream sends; default: %(default)s")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between report lines; default: %(default)s")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N; default: %(default)s")
    parser.add_argument("--threads", type=int, default=0, help="PyTorch CPU threads; 0 uses every core but one, as the watch command does")
    parser.add_argument("--out", default="/tmp/bench-watch", help="output folder of the watcher; default: %(default)s")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    # Frames are generated once: encoding is the server's work, not generating.
    patterns = [moving_pattern(arguments.width, arguments.height, index * 5) for index in range(30)]
    server = MjpegServer(lambda index: patterns[index % len(patterns)], fps=arguments.fps).start()
    detector = Detector(ModelSettings(device=arguments.device, threads=arguments.threads))
    detector.warmup((arguments.height, arguments.width))

    duration = arguments.minutes * 60
    settings = WatchSettings(out_dir=Path(arguments.out), health_interval=duration + 3600)
    watcher = Watcher([CameraSpec("bench", server.url)], detector, settings)
    camera = watcher.cameras[0]
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    process = psutil.Process()

    print(f"stream {arguments.width}x{arguments.height} at {arguments.fps:g} fps for {arguments.minutes:g} min; "
          f"model {detector.weights.name} on {detector.device} with {detector.threads} threads", flush=True)
    started = time.monotonic()
    thread.start()
    rss_start = None
    seen = 0
    interval_medians = []
    try:
        while time.monotonic() - started < duration:
            time.sleep(min(arguments.interval, max(0.0, duration - (time.monotonic() - started))))
            lags = camera.health.lags
            current = lags[seen:]
            seen = len(lags)
            rss = process.memory_info().rss / 2**20
            rss_start = rss if rss_start is None else rss_start
            if current:
                interval_medians.append(float(np.median(current)))
            print(
                f"{time.monotonic() - started:6.0f} s  sent {server.frames_sent:6d}  captured {camera.source.frames_captured:6d}  "
                f"processed {camera.processed_total:5d}  lag {percentiles(current)}  RSS {rss:7.1f} MiB",
                flush=True,
            )
    finally:
        stop.set()
        thread.join(timeout=30)
        server.stop()

    elapsed = time.monotonic() - started
    all_lags = camera.health.lags
    rss_end = process.memory_info().rss / 2**20
    print("--- summary")
    print(f"ran {elapsed:.0f} s: stream sent {server.frames_sent} frames ({server.frames_sent / elapsed:.1f} fps), "
          f"source captured {camera.source.frames_captured}, model processed {camera.processed_total} "
          f"({camera.processed_total / elapsed:.1f} fps)")
    print(f"lag over the run: {percentiles(all_lags)}")
    if interval_medians:
        print(f"median lag of first interval {1000 * interval_medians[0]:.0f} ms, of last {1000 * interval_medians[-1]:.0f} ms")
    print(f"RSS after first interval {rss_start or 0:.1f} MiB, at the end {rss_end:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
