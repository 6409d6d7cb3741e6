"""Paddle Inference on an exported folder: python infer.py --model_dir output/bottle/inference --input IMAGES."""
from common.cli.infer import main

if __name__ == "__main__":
    main()
