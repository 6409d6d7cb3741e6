"""``python -m common.check_dataset PATH [--dataset NAME] [--cls CLASS]``: check a dataset before training on it
(the command lives in :mod:`common.data.check`)."""
import sys

from common.data.check import main

if __name__ == "__main__":
    sys.exit(main())
