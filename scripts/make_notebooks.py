#!/usr/bin/env python
"""Write notebooks/METHOD.ipynb for every method folder (AI Studio-ready, committed without outputs).

    python scripts/make_notebooks.py

One template, one set of cells per method: setup (install, GPU check), data (MVTec AD when present, else synthetic
data), train, evaluate with the results table, predict with the heatmaps shown inline, export, Paddle Inference.
``NOTEBOOK_SMOKE=1`` in the environment makes every notebook use its method's tiny configuration (the tests run
them that way with nbclient).
"""
import os

import nbformat

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = {  # notebook name: (folder, title, paper, extra train options for the paper setting)
    "RD4AD": ("RD4AD-paddle", "RD4AD: reverse distillation from one-class embedding", "Deng & Li, CVPR 2022"),
    "OrthoAD": ("OrthoAD-paddle", "OrthoAD / PaDiM: semi-orthogonal embedding", "Kim et al., 2021"),
    "KDAD": ("KDAD-paddle", "KDAD (MKD): multiresolution knowledge distillation", "Salehi et al., CVPR 2021"),
    "EfficientAD": ("EfficientAD-paddle", "EfficientAD", "Batzner et al., WACV 2024"),
}

SETUP = '''import os
import subprocess
import sys

from IPython.display import Image, Markdown, display

REPO = os.path.abspath("..") if os.path.basename(os.getcwd()) == "notebooks" else os.getcwd()
METHOD_DIR = os.path.join(REPO, "{folder}")
# On a fresh AI Studio project, install once (the GPU image already has paddlepaddle-gpu):
# !pip install -r ../requirements.txt
import paddle

GPU = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
DEVICE = "gpu" if GPU else "cpu"
SMOKE = os.environ.get("NOTEBOOK_SMOKE") == "1"   # tiny settings (the tests run the notebook this way)
print("Paddle", paddle.__version__, "| device:", DEVICE)


def sh(*args, cwd=METHOD_DIR):
    """Run a command of the method folder, show its output, stop the notebook when it fails."""
    run = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True)
    print(run.stdout[-4000:], run.stderr[-2000:] if run.returncode else "")
    if run.returncode:
        raise RuntimeError(f"command failed with exit status {{run.returncode}}")
'''

DATA = '''# MVTec AD: download it from mvtec.com (licence CC BY-NC-SA 4.0) and point MVTEC_DIR at the extracted folder.
DATA_DIR = os.environ.get("MVTEC_DIR", os.path.join(REPO, "data", "mvtec_anomaly_detection"))
CLS = "bottle"
REAL_DATA = os.path.isdir(os.path.join(DATA_DIR, CLS))
if not REAL_DATA:
    DATA_DIR = os.path.join(REPO, "data", "synthetic")
    sh("-m", "common.synthetic", "--out", DATA_DIR, "--classes", CLS, "--size", 64, "--n_train", 16, cwd=REPO)
    print("MVTec AD not found: using synthetic data in", DATA_DIR)
OUTPUT_DIR = os.path.join(REPO, "output", "notebook_{name}")
# the paper's settings on real data; the tiny configuration (random weights, small images) otherwise
CONFIG = [] if REAL_DATA and not SMOKE else ["--config", "configs/tiny.yaml"]
COMMON = ["--cls", CLS, "--data_dir", DATA_DIR, "--output_dir", OUTPUT_DIR, "--device", DEVICE]
'''

TRAIN = '''sh("main.py", "--mode", "train", *COMMON, *CONFIG)'''
EVAL = '''sh("main.py", "--mode", "eval", *COMMON, "--save_pic")
sh(os.path.join(REPO, "scripts", "make_table.py"), os.path.join(OUTPUT_DIR, "results"), "--out",
   os.path.join(OUTPUT_DIR, "table.md"))
display(Markdown(open(os.path.join(OUTPUT_DIR, "table.md"), encoding="utf-8").read()))'''
PREDICT = '''test_dir = os.path.join(DATA_DIR, CLS, "test")
defect = sorted(d for d in os.listdir(test_dir) if d != "good")[0]
sh("main.py", "--mode", "predict", "--cls", CLS, "--output_dir", OUTPUT_DIR, "--device", DEVICE,
   "--input", os.path.join(test_dir, defect))
pictures = os.path.join(OUTPUT_DIR, CLS, "predictions")
for name in sorted(f for f in os.listdir(pictures) if f.endswith("_heatmap.png"))[:3]:
    display(Image(filename=os.path.join(pictures, name)))'''
EXPORT = '''sh("export_model.py", "--cls", CLS, "--output_dir", OUTPUT_DIR)'''
INFER = '''sh("infer.py", "--model_dir", os.path.join(OUTPUT_DIR, CLS, "inference"), "--input",
   os.path.join(test_dir, defect), "--output_dir", os.path.join(OUTPUT_DIR, "infer"), "--benchmark", "True",
   *(["--device", "gpu"] if GPU else []))
infer_pictures = os.path.join(OUTPUT_DIR, "infer")
for name in sorted(f for f in os.listdir(infer_pictures) if f.endswith("_contours.png"))[:3]:
    display(Image(filename=os.path.join(infer_pictures, name)))'''


def notebook(name, folder, title, paper):
    cells = [
        nbformat.v4.new_markdown_cell(f"# {title}\n\n{paper}. PaddlePaddle reproduction: `{folder}/` "
                                      "(see its README). Runs on AI Studio (GPU) or any CPU machine."),
        nbformat.v4.new_markdown_cell("## Setup"),
        nbformat.v4.new_code_cell(SETUP.format(folder=folder)),
        nbformat.v4.new_markdown_cell("## Data"),
        nbformat.v4.new_code_cell(DATA.format(name=name)),
        nbformat.v4.new_markdown_cell("## Train\nThe official settings (`configs/default.yaml`) on real data; "
                                      "the last epoch is kept (no selection on the test set)."),
        nbformat.v4.new_code_cell(TRAIN),
        nbformat.v4.new_markdown_cell("## Evaluate\nThe paper's own protocol and the standard MVTec AU-PRO, "
                                      "labelled, next to the paper's numbers."),
        nbformat.v4.new_code_cell(EVAL),
        nbformat.v4.new_markdown_cell("## Predict (dygraph)"),
        nbformat.v4.new_code_cell(PREDICT),
        nbformat.v4.new_markdown_cell("## Export and Paddle Inference"),
        nbformat.v4.new_code_cell(EXPORT),
        nbformat.v4.new_code_cell(INFER),
    ]
    for index, cell in enumerate(cells):  # fixed ids (nbformat draws random ones), so a rerun changes nothing
        cell["id"] = f"{name.lower()}-{index:02d}"
    book = nbformat.v4.new_notebook(cells=cells)
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return book


def build_all():
    """``{path: notebook}`` for every method folder present."""
    return {os.path.join(REPO, "notebooks", f"{name}.ipynb"): notebook(name, folder, title, paper)
            for name, (folder, title, paper) in METHODS.items()
            if os.path.isfile(os.path.join(REPO, folder, "main.py"))}


def main(argv=None):
    import argparse

    argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0]).parse_args(argv)
    os.makedirs(os.path.join(REPO, "notebooks"), exist_ok=True)
    for path, book in build_all().items():
        nbformat.write(book, path)
        print("wrote", path)


if __name__ == "__main__":
    main()
