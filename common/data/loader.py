"""The batch loader every method uses: an error while loading an item ends the run with one line, never a hang.

``paddle.io.DataLoader`` (3.3.1) blocks forever when a dataset's ``__getitem__`` raises, with ``num_workers=0`` too
(its single-process iterator reads items in a thread and waits on a queue the failed thread never fills). A
truncated image, a mask of the wrong size or a file removed mid-run would then hang training, calibration,
evaluation and prediction. :class:`Loader` reads items in the calling thread (``num_workers=0``) or in a thread
pool (``num_workers>0``: PIL decoding and resizing release the GIL, so threads overlap), re-raises any item error
as a :class:`~common.core.errors.UserError` naming the file and the reason, and stacks the fields of a batch into
Paddle tensors as ``paddle.io``'s default collate does.

Shuffling draws ``np.random.choice(n, n, replace=False)``, the same permutation ``paddle.io.RandomSampler`` draws,
so the NumPy RNG state (saved with training states) drives it. A ``batch_sampler`` such as
``paddle.io.DistributedBatchSampler`` replaces batching and shuffling (data-parallel training).
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from common.core.errors import UserError


def describe_item(dataset, index):
    """What to call item ``index`` in an error: the dataset's ``describe(index)`` when it has one."""
    describe = getattr(dataset, "describe", None)
    return describe(index) if describe else f"item {index}"


def load_item(dataset, index):
    """``dataset[index]``; any error becomes a ``UserError`` naming the item (its file) and the reason."""
    try:
        return dataset[index]
    except UserError as exc:
        where = describe_item(dataset, index)
        raise UserError(str(exc) if where in str(exc) else f"{where}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a bad file raises anything from PIL/NumPy/OS; report it, do not hang
        raise UserError(f"cannot load {describe_item(dataset, index)}: {type(exc).__name__}: {exc}") from None


def collate(items):
    """A list of equal-structure tuples -> a tuple of stacked Paddle tensors (one per field)."""
    import paddle

    fields = list(zip(*items))
    try:
        return tuple(paddle.to_tensor(np.stack([np.asarray(value) for value in field])) for field in fields)
    except ValueError as exc:  # items of different shapes: a preprocessing bug, named rather than hidden
        raise UserError(f"cannot batch items of different shapes ({exc})") from None


class Loader:
    """Batches of ``dataset`` (map-style: ``len`` and ``[i]``) as tuples of tensors; see the module docstring."""

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, num_workers=0, batch_sampler=None,
                 prefetch_batches=2):
        if batch_sampler is None and int(batch_size) < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        if int(num_workers) < 0:
            raise UserError(f"num_workers must be 0 or more, got {num_workers}")
        self.dataset, self.batch_size, self.shuffle = dataset, int(batch_size), bool(shuffle)
        self.drop_last, self.num_workers, self.batch_sampler = bool(drop_last), int(num_workers), batch_sampler
        self.prefetch_batches = max(1, int(prefetch_batches))

    def __len__(self):
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        full, rest = divmod(len(self.dataset), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def index_batches(self):
        """Lists of item indices, one per batch (drawn anew on each call when shuffling)."""
        if self.batch_sampler is not None:
            return [list(batch) for batch in self.batch_sampler]
        n = len(self.dataset)
        order = np.random.choice(np.arange(n), n, replace=False).tolist() if self.shuffle else list(range(n))
        batches = [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def __iter__(self):
        batches = self.index_batches()
        if self.num_workers == 0:
            for indices in batches:
                yield collate([load_item(self.dataset, i) for i in indices])
            return
        with ThreadPoolExecutor(self.num_workers, thread_name_prefix="loader") as pool:
            pending = []
            try:
                for indices in batches:
                    pending.append([pool.submit(load_item, self.dataset, i) for i in indices])
                    if len(pending) > self.prefetch_batches:
                        yield collate([future.result() for future in pending.pop(0)])
                while pending:
                    yield collate([future.result() for future in pending.pop(0)])
            finally:
                for futures in pending:
                    for future in futures:
                        future.cancel()
