"""KDAD predict: python predict.py --cls CLASS --data_dir DIR (the earlier port's --normal_class/--dataset_root work too)."""
from common.commands import main

if __name__ == "__main__":
    main("kdad", "predict")
