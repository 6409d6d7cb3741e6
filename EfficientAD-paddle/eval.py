"""Same as `python main.py --mode eval` (see --help)."""
import efficientad
from common.cli.commands import main

if __name__ == "__main__":
    main(efficientad, "eval")
