"""Same as `python main.py --mode predict` (see --help)."""
import rd4ad
from common.cli.commands import main

if __name__ == "__main__":
    main(rd4ad, "predict")
