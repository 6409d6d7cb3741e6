"""Data-parallel training with Paddle's own launcher, shared by every trainer that supports it:

    python -m paddle.distributed.launch --nproc_per_node 2 main.py --mode train ...      (--gpus 0,1 on a GPU machine)

Each process trains on its share of every global batch (``batch_size`` stays the global batch), ``paddle.DataParallel``
averages the gradients, and only rank 0 writes files or prints. :class:`ShardedBatches` draws the same global
permutation as the single-process :class:`common.data.loader.Loader` (NumPy's global RNG, seeded identically in every
process), so N processes see exactly the global batches one process would.

BatchNorm: one process normalises a batch of 16 over all 16 images; so do N processes only with
``SyncBatchNorm``, which the layer is converted to on GPU builds. Paddle's CPU build has no ``sync_batch_norm``
kernel ("The kernel `sync_batch_norm` is not registered"), so on the CPU each process normalises its own share and
a note says so; every other part of the step equals the single-process step.
"""
import os

import numpy as np

WORLD_SIZE_VARIABLE = "PADDLE_TRAINERS_NUM"


def world_size():
    """Processes launched by ``paddle.distributed.launch`` (1 without it)."""
    return int(os.environ.get(WORLD_SIZE_VARIABLE, "1") or 1)


def init():
    """Join the process group when launched by ``paddle.distributed.launch``; returns ``(rank, world_size)``."""
    if world_size() == 1:
        return 0, 1
    import paddle.distributed as dist

    if not dist.is_initialized():
        dist.init_parallel_env()
    return dist.get_rank(), dist.get_world_size()


def is_main_process():
    return rank() == 0


def rank():
    if world_size() == 1:
        return 0
    import paddle.distributed as dist

    return dist.get_rank()


def data_parallel(layer):
    """``paddle.DataParallel(layer)`` in a multi-process run (SyncBatchNorm on GPU builds), ``layer`` otherwise."""
    if world_size() == 1:
        return layer
    import paddle

    if paddle.device.is_compiled_with_cuda():
        layer = paddle.nn.SyncBatchNorm.convert_sync_batchnorm(layer)
    elif any(isinstance(sub, paddle.nn.layer.norm._BatchNormBase) for sub in layer.sublayers()) and rank() == 0:
        print("note: this Paddle build has no sync_batch_norm kernel on the CPU; each process normalises its own "
              "share of the batch (BatchNorm statistics differ from a one-process run)")
    return paddle.DataParallel(layer, find_unused_parameters=True)  # e.g. RD4AD's unused conv4/bn4


def mean_over_processes(value):
    """The mean of a float over all processes (for logging the global loss)."""
    if world_size() == 1:
        return float(value)
    import paddle
    import paddle.distributed as dist

    tensor = paddle.to_tensor([float(value)], dtype="float64")
    dist.all_reduce(tensor)
    return float(tensor.numpy()[0]) / world_size()


def barrier():
    if world_size() > 1:
        import paddle.distributed as dist

        dist.barrier()


class ShardedBatches:
    """Batch sampler: the single-process global batches (same permutation), each split across the processes.

    Process ``r`` of ``w`` gets items ``r, r + w, ...`` of every global batch of ``global_batch_size``; pass it as
    ``Loader(dataset, batch_sampler=ShardedBatches(...))``.
    """

    def __init__(self, num_items, global_batch_size, rank, world, shuffle=True, drop_last=False):
        if global_batch_size % world:
            from common.core.errors import UserError

            raise UserError(f"the batch size {global_batch_size} must be a multiple of the {world} processes")
        self.num_items, self.global_batch_size, self.rank, self.world = num_items, global_batch_size, rank, world
        self.shuffle, self.drop_last = shuffle, drop_last

    def __len__(self):
        full, rest = divmod(self.num_items, self.global_batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self):
        n = self.num_items
        order = np.random.choice(np.arange(n), n, replace=False).tolist() if self.shuffle else list(range(n))
        for start in range(0, n, self.global_batch_size):
            batch = order[start:start + self.global_batch_size]
            if len(batch) < self.global_batch_size and (self.drop_last or len(batch) < self.world):
                return  # a last batch too small to give every process an image is dropped
            yield batch[self.rank::self.world]
