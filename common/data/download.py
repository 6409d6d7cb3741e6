"""Download the one-class sets Paddle knows how to fetch, on a machine with internet.

    python -m common.download_dataset cifar10|mnist|fashionmnist DATA_DIR

CIFAR-10 comes as ``cifar-10-python.tar.gz``, MNIST and Fashion-MNIST as their four ``*-idx?-ubyte.gz`` files, each
from the URL Paddle's own dataset class uses and checked against Paddle's MD5 (``paddle.utils.download``); a file
already in ``DATA_DIR`` is kept. ``DATA_DIR`` is then the ``--data_dir`` of the commands. A failed download is one
``error:`` line naming the URL (exit 2); nothing is ever replaced by synthetic data. The other datasets have no
unattended download (MVTec AD, VisA, Kolektor, BTech, OCT2017 are fetched from their owners' pages by hand).
"""
import argparse
import os

from common.core.errors import UserError, main_guard

from .readers import cifar10, mnist

DATASETS = ("cifar10", "mnist", "fashionmnist")


def download(dataset, data_dir):
    """Download ``dataset`` into ``data_dir`` (files already there are kept); returns the paths of its files."""
    if dataset not in DATASETS:
        raise UserError(f"no download for --dataset {dataset}: {', '.join(DATASETS)} only (fetch the others from "
                        "their owners' pages)")
    created = not os.path.isdir(data_dir)
    os.makedirs(data_dir, exist_ok=True)
    try:
        return _download(dataset, data_dir)
    except UserError:
        if created and not os.listdir(data_dir):
            os.rmdir(data_dir)  # a failed download leaves nothing behind
        raise


def _download(dataset, data_dir):
    if dataset == "cifar10":
        existing = os.path.join(data_dir, cifar10.ARCHIVE)
        return [existing if os.path.isfile(existing) else cifar10.download_archive(data_dir)]
    variant = mnist.FASHION if dataset == "fashionmnist" else mnist.MNIST
    paths = []
    for names in mnist.FILES.values():
        for name in names:
            paths.append(mnist.find_file(data_dir, name, variant) or mnist.download_file(data_dir, name, variant))
    return paths


@main_guard
def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=DATASETS, help="the dataset to download")
    parser.add_argument("data_dir", help="folder to put its files in (the commands' --data_dir)")
    args = parser.parse_args(argv)
    for path in download(args.dataset, args.data_dir):
        print(path)
    print(f"--dataset {args.dataset} --data_dir {args.data_dir} reads them now")
    return 0
