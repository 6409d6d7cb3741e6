"""The earlier port's evaluation command: python test.py --config configs/config.yaml --dataset_root DIR
--normal_class CLASS --model_path FILE. The model's own saved configuration is used, so --config is ignored: the
port's configs/config.yaml held the MVTec settings, the official one (here) is CIFAR-10's, and the port's commands
name it either way. (main.py --mode eval checks a --config against the model instead.)"""
import sys

import kdad
from common.cli.commands import main

if __name__ == "__main__":
    if "--config" in sys.argv:  # the checkpoint carries the configuration it was trained with
        index = sys.argv.index("--config")
        del sys.argv[index:index + 2]
    main(kdad, "eval")
