"""Typed method configurations: dataclass defaults (the official code) <- a YAML file <- the command line.

Every method declares one dataclass in ``<pkg>/config.py`` whose defaults are its official code's. Each field is
made with :func:`option`, which records the help text, the commands that use it and whether it *describes the
fitted model* (backbone, k, image size, ...). From that one declaration:

- :func:`add_config_args` offers ``--name`` (and aliases) only on the commands that use the field. A field that
  describes the model is also offered on eval/predict/export, where :func:`check_model_flags` accepts it when it
  matches the model and refuses it with one line when it contradicts it (``--k 50`` on a k=300 model).
- :func:`build_config` layers the dataclass defaults, then ``--config FILE.yaml`` (unknown keys are an error), then
  the options given on the command line, and checks every value's type.

The same idea has the same name in every method (``epochs``, ``validation_fraction``, ...); the official codes' and
earlier versions' spellings are aliases, accepted on the command line, in YAML files and in saved configurations
(:func:`canonical_dict`), so old checkpoints and the official config files still load.
"""
import dataclasses
import os
import typing

import yaml

from .errors import UserError

TRAIN, EVAL, PREDICT, EXPORT = "train", "eval", "predict", "export"
MODES = (TRAIN, EVAL, PREDICT, EXPORT)


def option(default, help, modes=(TRAIN,), model=False, aliases=(), choices=None):  # noqa: A002 - argparse's word
    """A config field: ``modes`` are the commands that use it; ``model`` marks a property of the fitted model."""
    return dataclasses.field(default=default, metadata={
        "help": help, "modes": tuple(modes), "model": bool(model), "aliases": tuple(aliases),
        "choices": None if choices is None else tuple(choices)})


def _fields(config_class):
    hints = typing.get_type_hints(config_class)
    return [(field, _base_type(hints[field.name])) for field in dataclasses.fields(config_class)]


def _base_type(hint):
    """``Optional[X]`` -> X; other hints unchanged."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint


def offered(field, mode):
    """True when ``field`` is an option of the command ``mode``."""
    meta = field.metadata
    return mode in meta.get("modes", (TRAIN,)) or (meta.get("model") and mode != TRAIN)


def _parse_bool(value):
    lowered = str(value).lower()
    if lowered in ("1", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "no", "n", "off"):
        return False
    raise ValueError(f"expected a boolean, got '{value}'")


def _argparse_type(kind):
    if kind is bool:
        def parse(value):
            import argparse

            try:
                return _parse_bool(value)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None
        return parse
    return kind


def add_config_args(parser, config_class, mode):
    """Add ``--FIELD`` for every field of ``config_class`` that ``mode`` uses (default None = not given)."""
    group = parser.add_argument_group(f"{config_class.__name__} options")
    for field, kind in _fields(config_class):
        if not offered(field, mode):
            continue
        meta = field.metadata
        text = meta.get("help", "")
        if meta.get("model") and mode != TRAIN:
            text += " (describes the trained model: checked against it)"
        names = [f"--{field.name}", *(f"--{a}" for a in meta.get("aliases", ()))]
        kwargs = dict(dest=field.name, default=None, type=_argparse_type(kind),
                      help=f"{text} [default: {field.default}]")
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        if kind is bool:
            kwargs.update(nargs="?", const=True, metavar="BOOL")
        group.add_argument(*names, **kwargs)
    return parser


def load_yaml(path):
    """A YAML mapping from ``path``; a missing or malformed file is a ``UserError``."""
    if not os.path.isfile(path):
        raise UserError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            values = yaml.safe_load(handle) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"cannot parse {path}: {exc}".splitlines()[0]) from None
    if not isinstance(values, dict):
        raise UserError(f"{path} must hold a mapping of option: value")
    return values


def _coerce(name, value, kind, where):
    if value is None:
        return None
    if kind is bool:
        try:
            return value if isinstance(value, bool) else _parse_bool(value)
        except ValueError:
            pass
    elif kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif kind is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    elif kind not in (bool, float, int, str):
        return value
    raise UserError(f"{name} must be {kind.__name__}, got {value!r}{where}")


def canonical_dict(config_class, values):
    """``values`` with every alias key (``num_epochs``, ``calibration_fraction``, ...) under its field's name."""
    names = {}
    for field in dataclasses.fields(config_class):
        names[field.name] = field.name
        names.update({alias: field.name for alias in field.metadata.get("aliases", ())})
    out = {}
    for key, value in dict(values).items():
        name = names.get(key, key)
        if name in out and key != name:
            continue  # the field's own name wins over an alias given too
        out[name] = value
    return out


def build_config(config_class, yaml_path=None, overrides=None):
    """Dataclass defaults <- ``yaml_path`` <- ``overrides`` (a dict or namespace; None values are "not given")."""
    fields = dict((field.name, (field, kind)) for field, kind in _fields(config_class))
    values = {}
    if yaml_path:
        from_file = canonical_dict(config_class, load_yaml(yaml_path))
        unknown = sorted(set(from_file) - set(fields))
        if unknown:
            raise UserError(f"unknown option(s) in {yaml_path}: {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(fields))}")
        values.update({k: _coerce(k, v, fields[k][1], f" (in {yaml_path})") for k, v in from_file.items()})
    overrides = vars(overrides) if hasattr(overrides, "__dict__") else dict(overrides or {})
    values.update({k: _coerce(k, v, fields[k][1], "") for k, v in overrides.items()
                   if k in fields and v is not None})
    for name, value in values.items():
        choices = fields[name][0].metadata.get("choices")
        if choices and value is not None and value not in choices:
            raise UserError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return config_class(**values)


def config_from_dict(config_class, values):
    """Rebuild a saved configuration (keys the class does not know, e.g. from an older version, are ignored)."""
    names = {field.name for field in dataclasses.fields(config_class)}
    values = canonical_dict(config_class, values)
    return build_config(config_class, overrides={k: v for k, v in values.items() if k in names})


def given_model_flags(config_class, args):
    """``{name: value}`` of the model-describing options given on the command line."""
    return {field.name: getattr(args, field.name) for field, _ in _fields(config_class)
            if field.metadata.get("model") and getattr(args, field.name, None) is not None}


def _same(given, actual):
    if isinstance(actual, float):
        return abs(float(given) - float(actual)) <= 1e-12 * max(1.0, abs(float(actual)))
    return given == actual


def check_model_flags(config_class, args, model_config, where):
    """Refuse a model-describing option that contradicts the loaded model (one line naming both values)."""
    given_flags = given_model_flags(config_class, args)
    canonical = build_config(config_class, overrides=given_flags)  # e.g. a method alias -> its canonical name
    for name in given_flags:
        given, actual = getattr(canonical, name), getattr(model_config, name)
        if not _same(given, actual):
            raise UserError(f"--{name} {given} contradicts the model in {where} ({name} {actual}); "
                            f"drop --{name} or point to the model you mean")


def file_options(config_class, yaml_path):
    """``(config, names)``: the configuration a YAML file gives and the option names it sets (aliases under their
    field's name)."""
    return build_config(config_class, yaml_path), set(canonical_dict(config_class, load_yaml(yaml_path)))


def check_model_file(config_class, yaml_path, model_config, where):
    """Refuse a ``--config FILE`` given to eval/predict (the official commands pass their training YAML) whose
    model-describing options contradict the loaded model. The file's training settings (epochs, lr, ...) are not
    used: the model's own saved configuration is."""
    from_file, given = file_options(config_class, yaml_path)
    for field in dataclasses.fields(config_class):
        name = field.name
        if field.metadata.get("model") and name in given and not _same(getattr(from_file, name),
                                                                       getattr(model_config, name)):
            raise UserError(f"{yaml_path} sets {name} {getattr(from_file, name)} but the model in {where} has "
                            f"{name} {getattr(model_config, name)}; give the YAML it was trained with, or none")


def to_dict(config):
    return dataclasses.asdict(config)
