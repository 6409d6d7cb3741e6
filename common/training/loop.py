"""The training loop's shared parts: one epoch with its NaN stop, and the epochs of an epoch-based trainer with their
log, test-set monitoring and resumable states."""
from common.core.errors import UserError

from . import distributed


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def train_epoch(loader, batch_loss, optimizer, cls, epoch, epochs, lr, print_steps, decimals=4):
    """One epoch of ``loss = batch_loss(batch)``, backward, optimiser step; returns the mean loss over the batches.

    The logged loss is the mean over the processes of a data-parallel run. A non-finite loss stops the run with
    :class:`TrainingDiverged` (one ``error:`` line) before the optimiser applies it. Progress bar on rank 0 and a
    terminal only; every ``print_steps`` steps a line ``[CLS] epoch E step S/N loss L``.
    """
    import math

    import numpy as np
    from tqdm import tqdm

    losses = []
    steps = len(loader)
    main = distributed.is_main_process()
    bar = tqdm(loader, total=steps, desc=f"[{cls}] epoch {epoch}/{epochs}", leave=False, dynamic_ncols=True,
               disable=None if main else True)  # no bar off a terminal or off rank 0
    for step, batch in enumerate(bar, start=1):
        loss = batch_loss(batch)
        value = distributed.mean_over_processes(float(loss))
        if not math.isfinite(value):
            bar.close()
            raise TrainingDiverged(
                f"training stopped: loss is {value} at epoch {epoch}, step {step} (lr {lr}); "
                "lower --lr, check the input images, or --resume from the last saved state")
        optimizer.clear_grad()
        loss.backward()
        optimizer.step()
        losses.append(value)
        bar.set_postfix(loss=f"{value:.4f}")
        if main and step % print_steps == 0:
            bar.write(f"[{cls}] epoch {epoch} step {step}/{steps} loss {value:.{decimals}f}")
    bar.close()
    return float(np.mean(losses))


MONITORING_LABEL = "test-set monitoring only (no model selection; the final model is the last {unit})"


def run_epochs(run_epoch, *, cls, config, log, total, done=0, first_label=1, save_state=None, monitor=None,
               decimals=4, main=True):
    """Epochs ``done + 1 .. total`` of an epoch-based trainer; returns the last epoch's mean loss.

    ``run_epoch(label)`` trains one epoch and returns its mean loss; epochs are labelled from ``first_label`` (RD4AD
    counts 1..epochs, KDAD's official loop 0..num_epochs). On the first process of a run only: each epoch's record
    goes to ``log`` (with the test-set metrics of ``monitor()`` every ``config.eval_interval`` epochs, logged only,
    never used to choose a model), then ``save_state(done)`` writes the resumable state every
    ``config.save_interval`` epochs and after the last. The record is written before the state: a run killed
    between the two repeats that epoch when resumed and logs it once.
    """
    loss = float("nan")
    last_label = total - 1 + first_label
    for count in range(done + 1, total + 1):
        label = count - 1 + first_label
        loss = run_epoch(label)
        if not main:
            continue
        record = {"epoch": label, "loss": loss}
        if monitor is not None and config.eval_interval and label % config.eval_interval == 0:
            record["test_metrics"] = {"label": MONITORING_LABEL.format(unit="epoch"), **monitor()}
            print(f"[{cls}] epoch {label} {record['test_metrics']['label']}: {record['test_metrics']}")
        log.append(record)
        if save_state is not None and (count % config.save_interval == 0 or count == total):
            save_state(count)
        print(f"[{cls}] epoch [{label}/{last_label}] loss {loss:.{decimals}f}")
    return loss
