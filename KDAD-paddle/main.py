"""KDAD: python main.py --mode train|eval|predict|infer --cls CLASS --data_dir DIR (see --help)."""
from common.commands import main

if __name__ == "__main__":
    main("kdad")
