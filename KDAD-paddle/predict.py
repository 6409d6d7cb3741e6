"""KDAD predict: python predict.py --cls CLASS --data_dir DIR (the earlier port's --normal_class/--dataset_root work too)."""
import kdad
from common.cli.commands import main

if __name__ == "__main__":
    main(kdad, "predict")
