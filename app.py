"""Gradio demo of the smoking detector: image, video and webcam tabs over the shipped model.

Start it with ``python app.py`` and open http://127.0.0.1:7860. It serves only
this machine unless ``--host`` or ``--share`` says otherwise; ``python app.py
--help`` lists the options. The logic behind each tab lives in
``detector/demo.py``; this file holds the page layout and the server options.
"""

from __future__ import annotations

import os

# Both must be set before Gradio and Ultralytics are imported, which read them at import time.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("YOLO_OFFLINE", "1")

import argparse
import atexit
import logging
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import gradio as gr
from gradio.data_classes import ImageData
from PIL import Image

from detector import demo
from detector.events import AlertSettings
from detector.model import DEFAULT_CONFIDENCE, DEFAULT_WEIGHTS, ModelSettings

logger = logging.getLogger("app")

WEBCAM_STREAM_EVERY = 0.5  # Seconds between camera frames sent to the server.
WEBCAM_TIME_LIMIT = 600  # Seconds one camera stream may run before the browser must restart it.
EMPTY_DETECTIONS: list[list[float]] = []


def pass_upload_path_through(component: gr.Image) -> gr.Image:
    """Make an image input hand the uploaded file's path over without decoding it.

    Stock ``gr.Image`` opens the upload with Pillow before the event function
    runs, so a broken or oversized file fails there with a bare "Error" in the
    page. Passing the path lets :func:`detector.demo.load_image` check it and
    explain what is wrong. The method is replaced on the instance because
    subclassing a component makes Gradio write a ``.pyi`` stub next to this file.
    """
    stock_preprocess = component.preprocess

    def preprocess(payload: ImageData | None) -> str | None:
        if payload is None:
            return None
        if payload.url and payload.url.startswith("data:"):
            return stock_preprocess(payload)  # Pasted data; type="filepath" writes it to the cache.
        return payload.path

    component.preprocess = preprocess
    return component


class DemoApp:
    """The shared model, the temporary folder, the model card text and the webcam alert timing of one running app."""

    def __init__(
        self,
        detector: demo.SharedDetector,
        temp: demo.TempArea,
        model_card: str,
        webcam_alerts: AlertSettings = demo.WEBCAM_ALERTS,
    ) -> None:
        self.detector = detector
        self.temp = temp
        self.model_card = model_card
        self.webcam_alerts = webcam_alerts

    # Event handlers return one value per output component, in the order of the `outputs=` lists below.

    def on_image(self, path: str | None, confidence: float):
        if not path:
            return None, EMPTY_DETECTIONS, ""
        try:
            image = demo.load_image(path)
            result = demo.detect_image(self.detector, image, confidence=confidence)
        except demo.DemoInputError as error:
            logger.info("image rejected: %s", error)
            return None, EMPTY_DETECTIONS, f"⚠️ {error}"
        except Exception as error:  # Any other failure is a bug; the page gets one line, the log the traceback.
            logger.exception("image detection failed")
            return None, EMPTY_DETECTIONS, f"⚠️ Detection failed ({type(error).__name__}). The server log has the details."
        return result.annotated_rgb, result.rows, result.verdict

    def on_video(self, path: str | None, confidence: float, progress=gr.Progress()):
        if not path:
            return None, [], None, ""
        progress(0.0, desc="opening the video")
        out_dir = self.temp.new_dir()
        try:
            result = demo.process_video(
                self.detector,
                path,
                out_dir,
                confidence=confidence,
                progress=lambda share, label: progress(share, desc=label),
            )
        except demo.DemoInputError as error:
            logger.info("video rejected: %s", error)
            return None, [], None, f"⚠️ {error}"
        except Exception as error:  # As in on_image: one line in the page, the traceback in the log.
            logger.exception("video processing failed")
            return None, [], None, f"⚠️ Processing failed ({type(error).__name__}). The server log has the details."
        figure = demo.confidence_figure(result, threshold=confidence)
        return str(result.annotated_path), result.event_rows, figure, result.summary()

    def on_webcam(self, frame, confidence: float, session: demo.WebcamSession | None):
        arrived = time.monotonic()  # Before the wait for the shared model, which other tabs may hold.
        session = session or demo.WebcamSession(settings=self.webcam_alerts)
        if frame is None:
            return None, "", session
        try:
            annotated, status = session.process(self.detector, frame, confidence=confidence, now=arrived)
        except Exception as error:  # A failing frame must not end the stream; the next one may work.
            logger.exception("webcam frame failed")
            return None, f"⚠️ Frame failed ({type(error).__name__}). The server log has the details.", session
        return annotated, status, session


def build_app(app: DemoApp) -> gr.Blocks:
    """Lay out the page and wire its events."""
    with gr.Blocks(title="Smoking detector", delete_cache=(600, 3600)) as blocks:
        gr.Markdown("# Smoking detector\nFinds cigarettes in images, video clips and a live camera with a YOLOv9-t model.")
        with gr.Tab("Image", id="image"):
            _image_tab(app)
        with gr.Tab("Video", id="video"):
            _video_tab(app)
        with gr.Tab("Webcam", id="webcam"):
            _webcam_tab(app)
        with gr.Tab("About", id="about"):
            gr.Markdown(_about_text(app), elem_id="about-text")
    return blocks


def _confidence_slider(elem_id: str) -> gr.Slider:
    return gr.Slider(
        0.01,
        0.95,
        value=DEFAULT_CONFIDENCE,
        step=0.01,
        label="Confidence threshold for drawn boxes",
        elem_id=elem_id,
    )


def _image_tab(app: DemoApp) -> None:
    with gr.Row():
        with gr.Column():
            image_input = pass_upload_path_through(
                gr.Image(
                    type="filepath", image_mode=None, sources=["upload", "clipboard"], label="Image", elem_id="image-input"
                )
            )
            confidence = _confidence_slider("image-confidence")
        with gr.Column():
            image_output = gr.Image(label="Detections", interactive=False, elem_id="image-output")
            verdict = gr.Markdown(elem_id="image-verdict")
            table = gr.Dataframe(headers=demo.DETECTION_COLUMNS, label="Boxes (pixels)", elem_id="image-table")
    outputs = [image_output, table, verdict]
    image_input.change(app.on_image, inputs=[image_input, confidence], outputs=outputs)
    confidence.release(app.on_image, inputs=[image_input, confidence], outputs=outputs)


def _video_tab(app: DemoApp) -> None:
    limits = (
        f"Clips up to {demo.MAX_VIDEO_SECONDS:.0f} s and {demo.MAX_VIDEO_BYTES // 2**20} MB. "
        f"The model sees {demo.VIDEO_SAMPLE_FPS:g} frames per second of video."
    )
    with gr.Row():
        with gr.Column():
            video_input = gr.Video(sources=["upload"], format=None, label="Video clip", elem_id="video-input")
            confidence = _confidence_slider("video-confidence")
            run = gr.Button("Detect", variant="primary", elem_id="video-run")
            gr.Markdown(limits)
        with gr.Column():
            video_output = gr.Video(label="Annotated video", interactive=False, elem_id="video-output")
            status = gr.Markdown(elem_id="video-status")
    events = gr.Dataframe(headers=demo.EVENT_COLUMNS, label="Smoking events", elem_id="video-events")
    plot = gr.Plot(label="Confidence over time", elem_id="video-plot")
    outputs = [video_output, events, plot, status]
    run.click(app.on_video, inputs=[video_input, confidence], outputs=outputs)
    video_input.upload(app.on_video, inputs=[video_input, confidence], outputs=outputs)


def _webcam_tab(app: DemoApp) -> None:
    settings = app.webcam_alerts
    gr.Markdown(
        f"An alert is raised once a cigarette has been seen for {settings.min_duration:g} s in at least "
        f"{settings.min_positive_fraction:.0%} of frames, and clears after {settings.clear_after:g} s without one; "
        f"no new alert is raised within {settings.cooldown:g} s of a clearing. These are the rules of `smokedet watch` "
        "with shorter times. Frames are processed on the server; nothing is recorded."
    )
    session = gr.State(None)
    with gr.Row():
        with gr.Column():
            camera = gr.Image(
                sources=["webcam"],
                streaming=True,
                type="numpy",
                label="Camera",
                webcam_options=gr.WebcamOptions(mirror=False),
                elem_id="webcam-input",
            )
            confidence = _confidence_slider("webcam-confidence")
        with gr.Column():
            annotated = gr.Image(label="Detections", interactive=False, elem_id="webcam-output")
            status = gr.Markdown(elem_id="webcam-status")
    camera.stream(
        app.on_webcam,
        inputs=[camera, confidence, session],
        outputs=[annotated, status, session],
        stream_every=WEBCAM_STREAM_EVERY,
        time_limit=WEBCAM_TIME_LIMIT,
    )


def _about_text(app: DemoApp) -> str:
    settings = app.detector.settings
    return (
        "## Model\n"
        f"Weights `{Path(settings.weights).name}`, input size {settings.imgsz} px, "
        f"confidence threshold {DEFAULT_CONFIDENCE:.2f} (chosen for the shipped model), IoU {settings.iou:.2f}.\n\n"
        "## Model card\n\n"
        f"{app.model_card}\n"
    )


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve the smoking detector's Gradio demo.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 serves every interface; default: %(default)s")
    parser.add_argument("--port", type=int, default=7860, help="TCP port; default: %(default)s")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (sends traffic through Gradio's servers)")
    parser.add_argument(
        "--auth",
        default=None,
        help="require HTTP login as user:password; default: the SMOKEDET_AUTH environment variable, else no login",
    )
    parser.add_argument("--concurrency", type=int, default=2, help="events each tab runs at once; default: %(default)s")
    parser.add_argument("--queue-size", type=int, default=32, help="requests that may wait in the queue; default: %(default)s")
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="model file; default: %(default)s")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N; default: %(default)s")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR; default: %(default)s")
    return parser.parse_args(argv)


def _interrupt_on_sigterm(signal_number: int, frame) -> None:
    logger.info("received SIGTERM, stopping the server")
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    logging.basicConfig(level=arguments.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if arguments.concurrency < 1:
        raise SystemExit(f"invalid --concurrency {arguments.concurrency}: use 1 or more")
    try:
        auth = demo.parse_auth(arguments.auth or os.environ.get("SMOKEDET_AUTH"))
    except ValueError as error:
        raise SystemExit(f"invalid --auth or SMOKEDET_AUTH: {error}") from None

    # Pillow warns above this pixel count and raises above twice it; load_image rejects anything above it first.
    Image.MAX_IMAGE_PIXELS = demo.MAX_IMAGE_PIXELS
    temp = demo.TempArea()
    atexit.register(temp.cleanup)
    # Gradio keeps uploads and copies of returned files in its cache (default /tmp/gradio) and empties
    # it only when the next app starts. Inside the temporary area, the cache is removed at exit.
    # Gradio reads GRADIO_TEMP_DIR when Blocks and its server are created, so this precedes build_app.
    os.environ.setdefault("GRADIO_TEMP_DIR", str(temp.root / "gradio"))
    # By default SIGTERM (systemd, docker stop) ends Python without running atexit handlers.
    # Raised as KeyboardInterrupt, it stops Gradio's launch as Ctrl-C does, so cleanup runs.
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    demo.ensure_ffmpeg_on_path(temp.root / "bin")

    weights = Path(arguments.weights)
    settings = ModelSettings(weights=weights, device=arguments.device)
    card = demo.read_model_card(demo.model_card_path(weights))
    app = DemoApp(demo.SharedDetector(settings), temp, card)
    blocks = build_app(app)
    blocks.queue(default_concurrency_limit=arguments.concurrency, max_size=arguments.queue_size)
    logger.info("serving on http://%s:%d%s", arguments.host, arguments.port, " with login" if auth else "")
    blocks.launch(
        server_name=arguments.host,
        server_port=arguments.port,
        share=arguments.share,
        auth=auth,
        max_file_size=demo.MAX_VIDEO_BYTES,
        allowed_paths=[str(temp.root)],
        ssr_mode=False,
        show_error=False,
        footer_links=[],
    )


if __name__ == "__main__":
    main()
