"""Paddle Inference on an exported RD4AD graph.

    python infer.py --model_dir output/bottle/inference --input IMAGE_OR_FOLDER [--benchmark]
"""
from common.errors import main_guard
from rd4ad.infer import main

if __name__ == "__main__":
    main_guard(main)()
