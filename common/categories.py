"""MVTec AD category names and the groups a ``--cls`` option accepts."""
import difflib

from .errors import UserError

TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
OBJECTS = ("bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill", "screw",
           "toothbrush", "transistor", "zipper")
ALL_CLASSES = tuple(sorted(TEXTURES + OBJECTS))
GROUPS = {"all": ALL_CLASSES, "textures": TEXTURES, "objects": OBJECTS}
# MVTec AD classes stored as single-channel images.
GRAYSCALE_CLASSES = ("grid", "screw", "zipper")


def suggest(name, choices):
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def resolve_classes(spec, available=None):
    """Turn a ``--cls`` value into a list of class names.

    ``spec`` is a class name, a group (``all``, ``textures``, ``objects``) or a comma-separated list of either.
    ``available`` is the list of class folders actually present under the data root; when given, names outside
    MVTec AD that exist there (custom data) are accepted, and a group keeps only the classes that exist.
    Unknown names raise ``UserError`` naming the nearest valid choice.
    """
    available = list(available) if available is not None else None
    known = set(ALL_CLASSES) | set(available or [])
    out = []
    for name in [s.strip() for s in str(spec).split(",") if s.strip()]:
        if name in GROUPS:
            members = GROUPS[name]
            if available is not None:
                members = [c for c in members if c in available]
                if name == "all":
                    members = sorted(set(members) | set(available))
            out.extend(members)
        elif name in known:
            out.append(name)
        else:
            choices = sorted(known | set(GROUPS))
            raise UserError(f"unknown class '{name}'{suggest(name, choices)}; "
                            f"choose one of: {', '.join(choices)}")
    if not out:
        raise UserError(f"no classes selected by '{spec}'")
    return list(dict.fromkeys(out))
