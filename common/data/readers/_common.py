"""Small pieces the folder-based readers share: the fold check, image listing, the final sort."""
import os
from itertools import pairwise

from common.core.errors import UserError
from common.data.images import list_images


def no_fold(format_name, fold):
    """Formats without folds take ``fold=None``; any other value is the user's mistake, not a silent no-op."""
    if fold is not None:
        raise UserError(f"the {format_name} format has no folds (got fold {fold!r})")


def images_in(folder, extensions=None):
    """Sorted image files directly in ``folder``, optionally only those ending in ``extensions`` (any case)."""
    files = list_images(folder)
    if extensions:
        files = [f for f in files if f.lower().endswith(tuple(extensions))]
    return files


def require_folder(path, what):
    if not os.path.isdir(path):
        raise UserError(f"{what} not found: {path}")
    return path


def by_name(samples, where):
    """``samples`` sorted by ``name``; two samples with one name (outputs would overwrite each other) is an error."""
    ordered = sorted(samples, key=lambda s: s.name)
    for first, second in pairwise(ordered):
        if first.name == second.name:
            raise UserError(f"{where}: two images share the name '{first.name}': {first.path} and {second.path}")
    return ordered
