"""Convert EfficientAD PyTorch weights (nelson1425/EfficientAD, anomalib) for EfficientAD-paddle.

A teacher alone (for ``--teacher_weights``):

    python scripts/convert_efficientad_checkpoint.py --teacher models/teacher_small.pth --output teacher_small.pdparams

A trained teacher + student + autoencoder set, as a class model that ``main.py --mode eval`` evaluates:

    python scripts/convert_efficientad_checkpoint.py --teacher output/1/trainings/mvtec_ad/bottle/teacher_final.pth \\
        --student .../student_final.pth --autoencoder .../autoencoder_final.pth --cls bottle \\
        --data_dir mvtec_anomaly_detection --output_dir EfficientAD-paddle/output --model_size small

Accepted files: state dicts (nelson1425 ``teacher_small.pth`` / ``teacher_*_final_state.pth``, keys ``0.weight``
...), pickled ``nn.Module`` objects (nelson1425 ``*_final.pth``, ``*_tmp.pth``) and anomalib's
``pretrained_teacher_{small,medium}.pth`` (keys ``conv1.weight`` ...; mapped in order onto the reference's
``nn.Sequential`` indices). State dicts are read with ``torch.load(weights_only=True)``. A pickled module can only be
read with ``weights_only=False``, which EXECUTES CODE stored in the file: it is tried only after the safe load
fails, with a printed warning; convert only files you trust.

The reference does not save the teacher mean/std or the map quantiles, so a set is completed as the reference's
training would: mean/std of the teacher over the 90 % training split of ``--data_dir/CLS/train/good`` (seed 42, or
``--val_list``), q_a/q_b over the validation split; thresholds for predict/infer from the validation images.
"""
import argparse
import os
import re
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.join(REPO_ROOT, "EfficientAD-paddle"))

from common.core.errors import UserError, main_guard  # noqa: E402
from common.core.files import atomic_save  # noqa: E402

ANOMALIB_CONV = re.compile(r"^conv(\d+)\.(weight|bias)$")
UNSAFE_WARNING = ("warning: {path} is not a plain state dict; loading it as a pickled PyTorch module with "
                  "torch.load(weights_only=False), which executes code stored in the file. Convert only files you "
                  "trust.")


def _to_numpy(state):
    import torch

    return {k: v.detach().cpu().numpy() for k, v in state.items() if isinstance(v, torch.Tensor)}


def read_torch_weights(path):
    """``{key: ndarray}`` from a state dict or a pickled ``nn.Module`` file (the latter with a warning)."""
    import torch

    if not os.path.isfile(path):
        raise UserError(f"file not found: {path}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as safe_error:  # noqa: BLE001 - torch raises UnpicklingError and others for a pickled module
        print(UNSAFE_WARNING.format(path=path), file=sys.stderr)
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"cannot load {path} with torch.load: {' '.join(str(exc).split())[:200]} (safe load: "
                            f"{' '.join(str(safe_error).split())[:120]})") from None
    if isinstance(loaded, torch.nn.Module):
        loaded = loaded.state_dict()
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not loaded:
        raise UserError(f"{path} holds a {type(loaded).__name__}, not a state dict or an nn.Module")
    return _to_numpy(loaded)


def reference_keys(state, sequential_keys, path):
    """Keys as the reference's ``nn.Sequential`` (``0.weight`` ...): unchanged, or anomalib's ``convN`` in order."""
    if set(state) == set(sequential_keys):
        return state
    convs = sorted({int(m.group(1)) for m in map(ANOMALIB_CONV.match, state) if m})
    if convs and all(ANOMALIB_CONV.match(k) for k in state):
        indices = sorted({int(k.split(".")[0]) for k in sequential_keys})
        if len(indices) == len(convs):
            mapping = dict(zip(convs, indices))
            return {f"{mapping[int(ANOMALIB_CONV.match(k).group(1))]}.{k.split('.')[1]}": v for k, v in state.items()}
    shown = ", ".join(sorted(state)[:4])
    raise UserError(f"{path}: keys ({shown}, ...) are neither the reference's nn.Sequential keys nor anomalib's "
                    "convN names for this network (check --model_size)")


def convert_network(path, layer):
    """Load the torch weights at ``path`` into the Paddle ``layer`` (keys and shapes checked)."""
    from common.networks.backbones import load_state_dict_strict

    state = reference_keys(read_torch_weights(path), list(layer.state_dict()), path)
    try:
        load_state_dict_strict(layer, state)
    except UserError as exc:
        raise UserError(f"{path} does not fit this network ({exc}); check --model_size / --out_channels") from None
    return layer


def convert_teacher(path, output, model_size="small", out_channels=384, width_divisor=1):
    """Teacher file -> ``output`` (.pdparams state dict for ``--teacher_weights``); returns ``output``."""
    import paddle

    from efficientad.checkpoint import build_pdn_for
    from efficientad.config import Config

    config = Config(model_size=model_size, out_channels=out_channels, width_divisor=width_divisor)
    teacher = convert_network(path, build_pdn_for(config, out_channels))
    state = {k: v.numpy() for k, v in teacher.state_dict().items()}
    atomic_save(lambda tmp: paddle.save(state, tmp), output)
    return output


def convert_set(teacher, student, autoencoder, cls, data_dir, output_dir, model_size="small", out_channels=384,
                val_list=None, penalty="unknown (converted)", eval_batch_size=8, width_divisor=1):
    """A trained PyTorch set -> ``OUTPUT_DIR/CLS/efficientad.pdparams`` + ``thresholds.json``; returns the path."""
    from common.evaluation.thresholds import calibrate, write_thresholds
    from efficientad import checkpoint, trainer
    from efficientad.config import Config
    from efficientad.data import dataset, training_split
    from efficientad.detector import map_normalization, teacher_normalization

    config = Config(model_size=model_size, out_channels=out_channels, width_divisor=width_divisor,
                    teacher_weights=os.path.abspath(teacher),
                    val_list=val_list, penalty_dir=penalty, eval_batch_size=eval_batch_size)
    detector = checkpoint.build_detector_for(config)
    convert_network(teacher, detector.teacher)
    convert_network(student, detector.student)
    convert_network(autoencoder, detector.autoencoder)
    detector.eval()
    train_samples, validation_samples = training_split(config, data_dir, cls)
    train_set, validation_set = dataset(train_samples, config), dataset(validation_samples, config)
    detector.set_teacher_statistics(*teacher_normalization(
        detector.teacher, trainer._plain_batches(train_set, config.batch_size, config)))
    detector.set_map_quantiles(*map_normalization(
        detector, trainer._plain_batches(validation_set, config.eval_batch_size, config)))
    out_dir = os.path.join(output_dir, cls)
    meta = {"steps_done": None, "penalty": penalty, "validation_images": [s.path for s in validation_samples],
            "source": "converted from PyTorch: " + ", ".join(os.path.basename(p) for p in (teacher, student,
                                                                                          autoencoder))}
    path = checkpoint.save(os.path.join(out_dir, checkpoint.CHECKPOINT), detector, config, meta)
    write_thresholds(out_dir, calibrate(detector, validation_set, config, held_out=True))
    return path


def build_parser():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--teacher", required=True, help="teacher .pth (state dict, pickled module or anomalib)")
    parser.add_argument("--student", default=None, help="student .pth (with --autoencoder: convert a trained set)")
    parser.add_argument("--autoencoder", default=None, help="autoencoder .pth")
    parser.add_argument("--model_size", choices=("small", "medium"), default="small")
    parser.add_argument("--out_channels", type=int, default=384)
    parser.add_argument("--width_divisor", type=int, default=1, help="hidden widths divided by this (tests only)")
    parser.add_argument("--output", default=None, help="teacher alone: the .pdparams to write "
                        "(default: next to --teacher, same name)")
    parser.add_argument("--cls", default=None, help="set: the class it was trained on")
    parser.add_argument("--data_dir", default="mvtec", help="set: MVTec AD folder (statistics, quantiles)")
    parser.add_argument("--output_dir", default=os.path.join("EfficientAD-paddle", "output"),
                        help="set: writes OUTPUT_DIR/CLS/efficientad.pdparams")
    parser.add_argument("--val_list", default=None, help="set: validation images by name (else the 90/10 split)")
    parser.add_argument("--penalty", default="unknown (converted)",
                        help="set: recorded in the results, e.g. 'on (ImageNet)' or off")
    parser.add_argument("--threads", type=int, default=None)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from common.core.runtime import configure

    configure("cpu", args.threads, 0)
    if bool(args.student) != bool(args.autoencoder):
        raise UserError("give both --student and --autoencoder (a trained set), or neither (a teacher alone)")
    if args.student:
        if not args.cls:
            raise UserError("converting a trained set needs --cls (and --data_dir for its statistics)")
        path = convert_set(args.teacher, args.student, args.autoencoder, args.cls, args.data_dir, args.output_dir,
                           args.model_size, args.out_channels, args.val_list, args.penalty,
                           width_divisor=args.width_divisor)
        print(f"model: {path} (teacher mean/std and map quantiles from {args.data_dir}/{args.cls}/train); "
              f"evaluate with: cd EfficientAD-paddle && python main.py --mode eval --cls {args.cls} "
              f"--output_dir {os.path.abspath(args.output_dir)} --data_dir {os.path.abspath(args.data_dir)}")
        return path
    output = args.output or os.path.splitext(args.teacher)[0] + ".pdparams"
    convert_teacher(args.teacher, output, args.model_size, args.out_channels, args.width_divisor)
    print(f"teacher: {args.teacher} -> {output}; train with --teacher_weights {os.path.abspath(output)}")
    return output


if __name__ == "__main__":
    main_guard(main)()
