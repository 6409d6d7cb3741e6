"""Same as python main.py --mode eval (see main.py --help)."""
from common.errors import main_guard
from rd4ad.cli import main

if __name__ == "__main__":
    main_guard(main)(mode="eval")
