"""Pick the confidence threshold that maximises F1 on a dataset split (the validation split by default).

Runs Ultralytics ``val`` once and reads its precision, recall and F1 curves over
confidence. Prints the best threshold with its precision and recall, and the
figures at a few round thresholds for comparison. Usage::

    python scripts/choose_threshold.py --weights weights/cigarette-yolov9t.pt \\
        --data ../shared/datasets/cigarettes [--split val]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from detector.data import find_data_yaml, list_split_images, load_layout  # noqa: E402
from detector.model import DEFAULT_WEIGHTS  # noqa: E402
from detector.threads import set_torch_threads  # noqa: E402
from detector.training import SPLIT_ALIASES, _write_subset_yaml  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--data", required=True, help="dataset folder or data.yaml")
    parser.add_argument("--split", default="val", choices=sorted(SPLIT_ALIASES))
    parser.add_argument("--imgsz", type=int, default=416)
    parser.add_argument("--batch", type=int, default=16)
    arguments = parser.parse_args()

    from ultralytics import YOLO

    set_torch_threads(0)
    layout = load_layout(find_data_yaml(Path(arguments.data)))
    split = SPLIT_ALIASES[arguments.split]
    images = list_split_images(layout.splits[split])
    model = YOLO(arguments.weights, task="detect")
    with tempfile.TemporaryDirectory(prefix="smokedet-threshold-") as scratch:
        data_yaml = _write_subset_yaml(Path(scratch), split, images, layout.names)
        results = model.val(
            data=str(data_yaml),
            split="val",
            imgsz=arguments.imgsz,
            batch=arguments.batch,
            device="cpu",
            plots=False,
            verbose=False,
            project=scratch,
            name="val",
        )

    box = results.box
    confidences = np.asarray(box.px)
    f1 = np.asarray(box.f1_curve).mean(axis=0)
    precision = np.asarray(box.p_curve).mean(axis=0)
    recall = np.asarray(box.r_curve).mean(axis=0)
    best = int(f1.argmax())
    print(f"{arguments.weights} on the {split} split ({len(images)} images): mAP50 {box.map50:.3f}, mAP50-95 {box.map:.3f}")
    print(f"{'confidence':>10} {'precision':>10} {'recall':>10} {'F1':>10}")
    for value in (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5):
        index = int(np.abs(confidences - value).argmin())
        print(f"{value:>10.2f} {precision[index]:>10.3f} {recall[index]:>10.3f} {f1[index]:>10.3f}")
    print(
        f"best F1 {f1[best]:.3f} at confidence {confidences[best]:.3f} "
        f"(precision {precision[best]:.3f}, recall {recall[best]:.3f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
