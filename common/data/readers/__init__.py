"""One reader per dataset format (``--dataset NAME``), each a :class:`common.data.samples.DatasetFormat`, the
resolution of ``--cls`` against a format's classes and groups, and the three lists every method reads through
(:func:`train_samples`, :func:`validation_samples`, :func:`test_samples`).

Industrial formats: ``mvtec`` (MVTec AD, and your own classes in its layout), ``mvtec_loco``, ``visa``, ``kolektor``
(KolektorSDD, three folds), ``kolektor2`` (KolektorSDD2), ``btech``, ``folder`` (one class of your own). One-class
novelty formats: ``cifar10``, ``mnist``, ``fashionmnist``, ``retina`` (OCT2017), where a class is the normal class and
the whole test split is tested, the other classes anomalous.
"""
from common.core.errors import UserError, suggest

from . import btech, cifar10, kolektor, mnist, mvtec, mvtec_loco, retina, visa

FORMATS = {fmt.name: fmt for fmt in (mvtec.FORMAT, mvtec_loco.FORMAT, visa.FORMAT, kolektor.FORMAT,
                                     kolektor.FORMAT_KSDD2, btech.FORMAT, mvtec.FOLDER_FORMAT, cifar10.FORMAT,
                                     mnist.FORMAT, mnist.FORMAT_FASHION, retina.FORMAT)}
DEFAULT_FORMAT = "mvtec"
INDUSTRIAL = tuple(name for name, fmt in FORMATS.items() if fmt.kind == "industrial")
ONE_CLASS = tuple(name for name, fmt in FORMATS.items() if fmt.kind == "one_class")


def dataset_format(name=None):
    """The :class:`DatasetFormat` called ``name`` (default MVTec AD); an unknown name suggests the nearest."""
    name = name or DEFAULT_FORMAT
    if name not in FORMATS:
        raise UserError(f"unknown dataset '{name}'{suggest(name, FORMATS)}; choose one of: {', '.join(FORMATS)}")
    return FORMATS[name]


def resolve_classes(spec, available=None, fmt=None):
    """Turn a ``--cls`` value into a list of class names.

    ``spec`` is a class name, a group of the format (``all``; MVTec AD also ``textures``, ``objects``) or a
    comma-separated list of either. ``available`` is the list of classes actually present under the data root;
    when given, names outside the format's published classes that exist there (custom data) are accepted, and a
    group keeps only the classes that exist. Unknown names raise ``UserError`` naming the nearest valid choice.
    """
    fmt = fmt or dataset_format()
    groups = dict(fmt.groups) or {"all": fmt.classes}
    available = list(available) if available is not None else None
    known = set(fmt.classes) | set(available or [])
    out = []
    for name in [s.strip() for s in str(spec).split(",") if s.strip()]:
        if name in groups:
            members = groups[name]
            if available is not None:
                members = [c for c in members if c in available]
                if name == "all":
                    members = sorted(set(members) | set(available))
            out.extend(members)
        elif name in known:
            out.append(name)
        else:
            choices = sorted(known | set(groups))
            raise UserError(f"unknown class '{name}'{suggest(name, choices)}; "
                            f"choose one of: {', '.join(choices)}")
    if not out:
        raise UserError(f"no classes selected by '{spec}'")
    return list(dict.fromkeys(out))


def classes_for(spec, data_dir, fmt=None):
    """``--cls`` value -> class names present under ``data_dir`` (groups keep only what exists). For a one-class
    format a class is also given by its index (``--normal_class 3``, the official spelling)."""
    fmt = fmt or dataset_format()
    if fmt.kind == "one_class":
        from .one_class import normal_classes

        return normal_classes(fmt, spec, data_dir)
    available = fmt.list_classes(data_dir)
    if not available:
        raise UserError(f"no classes of the {fmt.name} format found in {data_dir}")
    classes = resolve_classes(spec, available, fmt)
    missing = [c for c in classes if c not in available]
    if missing and spec not in (dict(fmt.groups) or {"all": ()}):
        raise UserError(f"class '{missing[0]}' not found in {data_dir}{suggest(missing[0], available)}")
    return [c for c in classes if c in available]


def is_group(spec, fmt=None):
    """True when ``spec`` names a group of classes (``all``, ``textures``, ...) rather than classes."""
    fmt = fmt or dataset_format()
    return spec in (dict(fmt.groups) or {"all": ()})


def train_samples(dataset, root, cls, fold=None):
    """The normal training images of ``cls`` in the format ``dataset``."""
    return list(dataset_format(dataset).train(root, cls, fold))


def validation_samples(dataset, root, cls, fold=None):
    """The format's own validation images of ``cls`` (MVTec LOCO's ``validation/good``), or [] when it has none."""
    return dataset_format(dataset).validation_samples(root, cls, fold)


def test_samples(dataset, root, cls, fold=None):
    """The test images of ``cls`` with their labels, defect types and masks."""
    return list(dataset_format(dataset).test(root, cls, fold))


def check_fold(dataset, fold):
    """A ``--fold`` the format has (required when it has folds), else a one-line error."""
    fmt = dataset_format(dataset)
    if fmt.folds and fold is None:
        raise UserError(f"the {dataset} format has folds: give --fold {'|'.join(map(str, fmt.folds))}")
    if fold is not None and fold not in fmt.folds:
        raise UserError(f"--fold {fold}: the {dataset} format has "
                        + (f"folds {', '.join(map(str, fmt.folds))}" if fmt.folds else "no folds"))
    return fold
