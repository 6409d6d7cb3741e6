"""Web demo of exported detectors (Gradio; AI Studio runs it as an app):

    python -m common.app --model_dir RD4AD-paddle/output/bottle/inference [OrthoAD-paddle/output/bottle/inference ...]

Upload or pick an image, choose a model, and see the anomaly score, the decision, the heatmap overlay and the
predicted mask; the image and pixel thresholds start at each model's calibrated values and can be moved. Every
model is an exported folder (``export_model.py``), run with the same runners as ``infer.py`` (``--backend``), after
the same file-integrity check. The server listens on 127.0.0.1 unless ``--host`` says otherwise.
"""
import argparse
import os

import numpy as np

from common.core.errors import UserError, main_guard
from common.data.images import image_paths, to_rgb
from common.data.transforms import Preprocess
from common.evaluation.pictures import overlay

from .backends import BACKENDS, backend_files, make_runner, require
from .folder import load_infer_config, verify_files


class ExportedModel:
    """One exported folder: preprocessing, thresholds and a runner, loaded when first used."""

    def __init__(self, folder, backend=None, threads=None):
        from .quantize import default_backend

        self.info = load_infer_config(folder)
        backend = backend or default_backend(self.info.get("precision", "fp32"), self.info.get("backends"))
        self.folder, self.backend, self.threads = folder, backend, threads
        verify_files(folder, self.info.get("files"), backend_files(folder, backend))
        self.preprocess = Preprocess(**self.info["preprocess"])
        thresholds = self.info.get("thresholds") or {}
        self.image_threshold = thresholds.get("image_threshold")
        self.pixel_threshold = thresholds.get("pixel_threshold") or self.image_threshold
        self._runner = None

    @property
    def label(self):
        return f"{self.info.get('method', '?')} / {self.info.get('class', '?')} ({self.folder})"

    def detect(self, pil_image, image_threshold, pixel_threshold):
        """``(score, decision, heatmap overlay, mask)`` for one PIL image."""
        from .backends import map_and_score

        if self._runner is None:
            self._runner = make_runner(self.folder, self.backend, "cpu", self.threads,
                                       self.info.get("use_mkldnn", True))
        picture = to_rgb(pil_image)
        amap, score = map_and_score(self._runner.run(self.preprocess.image(picture)[None].astype(np.float32)))
        amap, score = amap[0, 0], float(score[0])
        shown = self.preprocess.resize_image(picture)
        vmax = 2.0 * pixel_threshold if pixel_threshold > 0 else None
        mask = ((amap >= pixel_threshold) * 255).astype(np.uint8)
        decision = "anomalous" if score >= image_threshold else "normal"
        return score, decision, overlay(shown, amap, None, vmax), mask


def build_app(models, examples=()):
    """The Gradio Blocks app over ``models`` ({label: ExportedModel})."""
    gr = require("gradio")
    labels = list(models)
    first = models[labels[0]]

    def thresholds_of(label):
        model = models[label]
        return (gr.update(value=model.image_threshold, maximum=3 * model.image_threshold),
                gr.update(value=model.pixel_threshold, maximum=3 * model.pixel_threshold))

    def detect(label, image, image_threshold, pixel_threshold):
        if image is None:
            raise gr.Error("upload or pick an image first")
        score, decision, heatmap, mask = models[label].detect(image, float(image_threshold), float(pixel_threshold))
        return round(score, 6), decision, heatmap, mask

    with gr.Blocks(title="Anomaly detection") as app:
        gr.Markdown("## Industrial anomaly detection\nUpload or pick an image, choose a model, press **Detect**.")
        with gr.Row():
            with gr.Column():
                model = gr.Dropdown(labels, value=labels[0], label="model", elem_id="model")
                image = gr.Image(type="pil", label="image", elem_id="input_image")
                image_threshold = gr.Slider(0.0, 3 * first.image_threshold, value=first.image_threshold,
                                            label="image threshold", elem_id="image_threshold")
                pixel_threshold = gr.Slider(0.0, 3 * first.pixel_threshold, value=first.pixel_threshold,
                                            label="pixel threshold (mask)", elem_id="pixel_threshold")
                button = gr.Button("Detect", variant="primary", elem_id="detect")
                if examples:
                    gr.Examples(list(examples), inputs=image)
            with gr.Column():
                score = gr.Number(label="anomaly score", elem_id="score")
                decision = gr.Textbox(label="decision", elem_id="decision")
                heatmap = gr.Image(label="heatmap", elem_id="heatmap")
                mask = gr.Image(label="predicted mask", elem_id="mask")
        model.change(thresholds_of, model, [image_threshold, pixel_threshold])
        button.click(detect, [model, image, image_threshold, pixel_threshold], [score, decision, heatmap, mask])
    return app


def build_parser():
    parser = argparse.ArgumentParser(allow_abbrev=False, description="Web demo of exported anomaly detectors (Gradio)")
    parser.add_argument("--model_dir", nargs="+", required=True, help="exported folders (export_model.py)")
    parser.add_argument("--examples", default=None, help="a folder of images offered as examples")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="default: paddle for float32 exports, openvino for int8/bf16/fp16 ones")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 to share on a network)")
    parser.add_argument("--port", type=int, default=7860)
    return parser


def run(argv=None):
    args = build_parser().parse_args(argv)
    models = {}
    for folder in args.model_dir:
        model = ExportedModel(folder, args.backend, args.threads)
        if model.image_threshold is None:
            raise UserError(f"{folder} has no calibrated threshold: export a model trained with this repository")
        models[model.label] = model
    examples = image_paths(args.examples)[:12] if args.examples else ()
    app = build_app(models, examples)
    print(f"serving {len(models)} model(s) on http://{args.host}:{args.port}", flush=True)
    app.launch(server_name=args.host, server_port=args.port, share=False, show_error=True)


def main():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the demo
    return main_guard(run)()


if __name__ == "__main__":
    main()
