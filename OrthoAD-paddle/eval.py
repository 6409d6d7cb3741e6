"""Same as `python main.py --mode eval` (see --help)."""
import orthoad
from common.cli.commands import main

if __name__ == "__main__":
    main(orthoad, "eval")
