"""Convert a torchvision ImageNet checkpoint (.pth) into a paddle.vision state dict (.pdparams).

    python scripts/convert_torch_weights.py --arch wide_resnet50_2 \
        --src wide_resnet50_2-95faca4d.pth --dst wide_resnet50_2_torchvision.pdparams

The source may be a plain state dict or a dict with a 'state_dict' or 'model' entry. The converted weights are
checked key by key and shape by shape against the paddle.vision model, then written atomically. Pass the result
to the methods with ``--backbone_weights``. See docs/weights.md.
"""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common.core.errors import UserError, main_guard  # noqa: E402
from common.core.runtime import configure  # noqa: E402
from common.networks.backbones import (
    ARCHS,
    build_backbone,
    check_arch,
    convert_torchvision_state_dict,
    load_state_dict_strict,
)


def load_torch_state_dict(path):
    """Read a torch checkpoint (``weights_only=True``) as ``{name: numpy.ndarray}``."""
    import torch

    if not os.path.isfile(path):
        raise UserError(f"source file not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = " ".join(str(exc).split())[:300]
        raise UserError(f"cannot load {path} with torch.load(weights_only=True): {reason}") from None
    if isinstance(checkpoint, dict):
        for entry in ("state_dict", "model"):
            if isinstance(checkpoint.get(entry), dict):
                checkpoint = checkpoint[entry]
                break
    if not isinstance(checkpoint, dict):
        raise UserError(f"{path} holds a {type(checkpoint).__name__}, not a state dict")
    not_tensors = [name for name, value in checkpoint.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise UserError(f"{path} is not a plain state dict: entries {', '.join(map(str, not_tensors[:5]))} "
                        "are not tensors")
    return {name: value.detach().cpu().numpy() for name, value in checkpoint.items()}


def save_atomically(state_dict, dst):
    """``paddle.save`` to a temporary file next to ``dst``, then rename it onto ``dst``."""
    import paddle

    folder = os.path.dirname(os.path.abspath(dst))
    os.makedirs(folder, exist_ok=True)
    handle, tmp_path = tempfile.mkstemp(dir=folder, prefix=os.path.basename(dst) + ".", suffix=".tmp")
    os.close(handle)
    try:
        paddle.save(state_dict, tmp_path)
        os.replace(tmp_path, dst)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", required=True, help=f"one of: {', '.join(ARCHS)}")
    parser.add_argument("--src", required=True, help="torchvision checkpoint (.pth)")
    parser.add_argument("--dst", required=True, help="output Paddle state dict (.pdparams)")
    return parser.parse_args(argv)


def torch_load(path):
    """``torch.load(weights_only=True)`` of any nesting of dicts and tensors -> the same nesting with NumPy arrays
    (official checkpoints such as RD4AD's ``{'bn': ..., 'decoder': ...}``)."""
    import torch

    if not os.path.isfile(path):
        raise UserError(f"file not found: {path}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types for a foreign or damaged file
        raise UserError(f"cannot load {path} with torch.load(weights_only=True): "
                        f"{' '.join(str(exc).split())[:300]}") from None

    def to_numpy(value):
        if isinstance(value, dict):
            return {k: to_numpy(v) for k, v in value.items()}
        if isinstance(value, torch.Tensor):
            return value.detach().cpu().numpy()
        return value

    return to_numpy(loaded)


def convert_file(src, dst, arch):
    """torchvision ``.pth`` of ``arch`` -> a checked paddle.vision ``.pdparams`` at ``dst``; returns ``dst``."""
    check_arch(arch)
    if not dst.endswith(".pdparams"):
        raise UserError(f"the converted file must end with .pdparams, got {dst}")
    configure("cpu")
    state_dict = convert_torchvision_state_dict(load_torch_state_dict(src), arch)
    model = build_backbone(arch, weights=None)
    try:
        load_state_dict_strict(model, state_dict)
    except UserError as exc:
        raise UserError(f"{src} is not a torchvision {arch} checkpoint: {exc}") from None
    save_atomically(model.state_dict(), dst)
    print(f"wrote {dst} ({len(state_dict)} tensors, {arch})")
    return dst


@main_guard
def main(argv=None):
    """Convert ``--src`` into ``--dst`` for ``--arch``; returns the output path."""
    args = parse_args(argv)
    return convert_file(args.src, args.dst, args.arch)


if __name__ == "__main__":
    main()
