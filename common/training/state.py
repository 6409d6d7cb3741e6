"""Resumable training, one behaviour for every trainer (``--resume``), and the state file it continues from.

``train_state.pdparams`` in the class folder holds the method's weights and optimiser, the epochs or steps done,
the random-number states that drive shuffling and augmentation, and the configuration. It is written atomically and
durably every ``save_interval`` epochs (steps) and after the last, so a run killed at any moment continues from the
last one written and ends as an uninterrupted run would, bit for bit.

``--resume`` (no path), per class: no state yet -> the class starts from the beginning, with one line saying so; a
state with every epoch done, a saved model and its thresholds -> the class is reported done and left as it is; a
state written with other options -> refused in one line. ``--resume STATE`` names the file, which must exist.
"""
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from common.core.checkpoint import load_state
from common.core.config import canonical_dict, to_dict
from common.core.errors import UserError
from common.core.files import atomic_save, remove_temporaries

TRAIN_STATE = "train_state.pdparams"
AUTO = "auto"  # --resume without a path


@dataclass
class ResumePoint:
    """Where a run continues: the saved ``state`` (None: from the beginning), its ``path`` and the ``done`` count."""

    state: Optional[dict]
    path: str
    done: int = 0


def resume_point(resume, out_dir, cls, config, must_match, done_key, total, unit="epochs"):
    """The :class:`ResumePoint` of ``--resume`` (None, :data:`AUTO` or a path) for the class folder ``out_dir``.

    ``must_match``: the options a continued run must share with the state; ``done_key``: the state's count of
    finished epochs (steps); ``total``: how many the run asks for.
    """
    from . import distributed

    if distributed.is_main_process():
        remove_temporaries(out_dir)  # what a run killed in the middle of a save left behind
    path = os.path.join(out_dir, TRAIN_STATE) if resume in (None, AUTO) else resume
    if resume is None:
        return ResumePoint(None, path)
    if resume == AUTO and not os.path.isfile(path):
        print(f"[{cls}] --resume: no training state at {path}; training {cls} from the beginning")
        return ResumePoint(None, path)
    state = load_state(path, "training state (--resume)")
    saved = canonical_dict(type(config), state.get("config", {}))
    changed = [f"{k} {saved.get(k)!r} -> {getattr(config, k)!r}" for k in must_match
               if saved.get(k) != getattr(config, k)]
    if changed:
        raise UserError(f"--resume: {path} was trained with other options ({'; '.join(changed)})")
    done = int(state[done_key])
    if done > int(total):
        raise UserError(f"--resume: {path} already has {done} {unit}, more than the {total} asked for")
    return ResumePoint(state, path, done)


def is_finished(point, total, model_saved, thresholds_saved):
    """True when the state has every epoch (step), and the model and its thresholds were written after it."""
    return point.state is not None and point.done == int(total) and model_saved and thresholds_saved


def save_state(path, state, done_key, done, config):
    """Write ``state`` with the count done, NumPy's global random state (it draws the shuffling) and the
    configuration, atomically and durably."""
    import paddle

    record = dict(state, **{done_key: int(done)}, numpy_rng=np.random.get_state(), config=to_dict(config))
    atomic_save(lambda tmp: paddle.save(record, tmp), path)


def restore_numpy_random_state(state):
    np.random.set_state(state["numpy_rng"])


def summary(checkpoint, final_loss, seconds, status="trained"):
    """What every ``train`` returns: the model file, the last loss (None for a fit), the seconds taken and
    ``status`` (``trained``, or ``done`` for a class that --resume found finished and left as it was)."""
    return {"checkpoint": checkpoint, "final_loss": final_loss, "seconds": seconds, "status": status}


def finished_class(cls, out_dir, checkpoint, point, unit, log, loss_field="loss"):
    """The summary of a class that ``--resume`` found finished (every epoch or step, its model and thresholds):
    reported in one line and left as it is (nothing retrained, no new thresholds)."""
    path = os.path.join(out_dir, checkpoint.CHECKPOINT)
    print(f"[{cls}] already trained ({point.done} {unit} in {point.path}): {path} and its thresholds are left as "
          "they are")
    return summary(path, log.last(loss_field), 0.0, status="done")


def thresholds_saved(out_dir):
    from common.evaluation.thresholds import THRESHOLDS_FILE

    return os.path.isfile(os.path.join(out_dir, THRESHOLDS_FILE))


def finish_class(cls, out_dir, checkpoint, detector, config, meta, calibration_set, held_out, start_time,
                 final_loss, scores_only=False):
    """The end of every trainer: save the model (``checkpoint.save``), calibrate the decision thresholds of
    predict/infer on ``calibration_set`` (normal images; ``held_out`` says whether training saw them; ``scores_only``:
    the image threshold alone, see :func:`common.evaluation.thresholds.calibrate`), write ``thresholds.json``, print
    one line; returns the :func:`summary`."""
    import time

    from common.evaluation.thresholds import calibrate, write_thresholds

    detector.eval()
    path = checkpoint.save(out_dir, detector, config, meta)
    thresholds = calibrate(detector, calibration_set, config, held_out=held_out, scores_only=scores_only)
    write_thresholds(out_dir, thresholds)
    seconds = time.time() - start_time
    print(f"[{cls}] saved {path}; image threshold {thresholds['image_threshold']:.4f} ({thresholds['source']}); "
          f"{seconds:.1f} s")
    return summary(path, final_loss, seconds)
