"""``python -m common.download_dataset cifar10|mnist|fashionmnist DATA_DIR``: fetch a one-class set with Paddle's
downloader on a machine with internet (the command lives in :mod:`common.data.download`)."""
import sys

from common.data.download import main

if __name__ == "__main__":
    sys.exit(main())
