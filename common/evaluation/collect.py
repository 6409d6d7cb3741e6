"""Anomaly maps and scores of a detector over a dataset, in order, without gradients."""
import numpy as np
from tqdm import tqdm

from common.data.loader import Loader


def collect(run_batch, dataset, batch_size, num_workers=0, desc="score"):
    """``(maps (N, S, S), scores (N,))`` of ``run_batch(images) -> (maps (B,S,S) ndarray, scores (B,))`` over
    ``dataset`` in order (no gradients; a progress bar on a terminal only)."""
    import paddle

    maps, scores = [], []
    loader = Loader(dataset, batch_size, num_workers=num_workers)
    with paddle.no_grad():
        for batch in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=None):
            batch_maps, batch_scores = run_batch(batch[0])
            maps.append(np.asarray(batch_maps))
            scores.append(np.asarray(batch_scores).reshape(-1))
    return np.concatenate(maps), np.concatenate(scores)


def collect_scores(score_batch, dataset, batch_size, num_workers=0, desc="score"):
    """``scores (N,)`` of ``score_batch(images) -> scores (B,)`` over ``dataset`` in order: for a method whose maps
    cost far more than its scores (KDAD's saliency), on data whose maps nobody reads."""
    def run_batch(images):
        scores = np.asarray(score_batch(images)).reshape(-1)
        return np.zeros((len(scores), 0, 0), dtype=np.float32), scores

    return collect(run_batch, dataset, batch_size, num_workers, desc)[1]
