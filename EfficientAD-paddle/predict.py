"""Same as `python main.py --mode predict` (see --help)."""
from common.commands import main

if __name__ == "__main__":
    main("efficientad", "predict")
