"""KDAD's official metrics (Niousha12/Knowledge_Distillation_AD ``test_functions.py``: ``compute_localization_auc``
with OpenCV's opening, ``detection_test``'s AUROC) restated in NumPy/OpenCV and compared with ``kdad.metric`` on
identical random maps (<= 1e-12). No torch: these run wherever KDAD does; the OpenCV ones skip alone without cv2.
"""
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from sklearn.metrics import auc, roc_curve

from conftest import method_dir

method_dir("KDAD-paddle")

from kdad.metric import kdad_detection_auroc, kdad_localization_auroc  # noqa: E402


def official_morphological_process(x, kernel_shape=None):
    """``morphological_process``: cv2 opening of every binary map; ``kernel_shape`` is for the mutant check."""
    cv2 = pytest.importorskip("cv2")
    kernel_shape = cv2.MORPH_ELLIPSE if kernel_shape is None else kernel_shape
    kernel = cv2.getStructuringElement(kernel_shape, (3, 3)).astype(np.uint8)
    binary_map = x.astype(np.uint8)
    return np.stack([cv2.morphologyEx(binary_map[i], cv2.MORPH_OPEN, kernel) for i in range(binary_map.shape[0])])


def official_compute_localization_auc(grad, x_ground, kernel_shape=None):
    """``compute_localization_auc``."""
    tpr, fpr = [], []
    x_ground_comp = np.mean(x_ground, axis=3)
    for threshold in [0.001 * i for i in range(1000)]:
        grad_t = 1.0 * (grad >= threshold)
        grad_t = official_morphological_process(grad_t, kernel_shape)
        tp_map = np.multiply(grad_t, x_ground_comp)
        tpr.append(np.sum(tp_map) / np.sum(x_ground_comp))
        fp_map = np.multiply(grad_t, 1 - x_ground_comp)
        tn_map = np.multiply(1 - grad_t, 1 - x_ground_comp)
        fpr.append(np.sum(fp_map) / (np.sum(fp_map) + np.sum(tn_map)))
    return auc(fpr, tpr)


def official_detection_auroc(image_folder_labels, scores, good_index):
    labels = np.array(image_folder_labels)
    normal = labels == good_index
    labels[normal], labels[~normal] = 1, 0
    fpr, tpr, _ = roc_curve(labels, np.array(scores), pos_label=0)
    return round(auc(fpr, tpr), 4)


def random_localization_case(seed, n=4, size=64):
    rng = np.random.default_rng(seed)
    saliency = gaussian_filter(rng.random((n, size, size)), sigma=(0, 2, 2))
    saliency = (saliency - saliency.min()) / (saliency.max() - saliency.min())
    masks = np.zeros((n, size, size, 3))
    for i in range(n):
        cy, cx, r = rng.integers(10, size - 10, 2).tolist() + [int(rng.integers(4, 10))]
        yy, xx = np.mgrid[:size, :size]
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
        masks[i][inside] = 1.0
        edge = ((yy - cy) ** 2 + (xx - cx) ** 2 <= (r + 1) ** 2) & ~inside
        masks[i][edge] = rng.random((edge.sum(), 3))  # soft, channel-dependent border like a resized RGB mask
    return saliency, masks


@pytest.mark.parametrize("seed", [0, 1])
def test_localization_auroc_equals_official(seed):
    saliency, masks = random_localization_case(seed)
    official = official_compute_localization_auc(saliency, masks)
    ours = kdad_localization_auroc(saliency, masks)
    # float32 maps compare with float32 thresholds, as NumPy does; the official float32 sums round at ~1e-7
    saliency32, masks32 = saliency.astype(np.float32), masks.astype(np.float32)
    official32 = official_compute_localization_auc(saliency32, masks32)
    ours32 = kdad_localization_auroc(saliency32, masks32)
    print(f"localization AUROC {official:.6f}: float64 difference {abs(ours - official):.1e}, "
          f"float32 {abs(ours32 - official32):.1e}")
    assert abs(ours - official) <= 1e-12
    assert abs(ours32 - official32) <= 1e-6
    assert abs(kdad_localization_auroc(saliency32, masks32.astype(np.float64))
               - official_compute_localization_auc(saliency32, masks32.astype(np.float64))) <= 1e-12


def test_localization_auroc_mutant_structuring_element_is_detected():
    saliency, masks = random_localization_case(2)
    square = np.ones((3, 3), dtype=bool)
    official = official_compute_localization_auc(saliency, masks)
    mutant = kdad_localization_auroc(saliency, masks, structure=square)
    print(f"localization AUROC with the cross {official:.6f}, with a 3x3 square {mutant:.6f}")
    assert abs(mutant - official) > 1e-4
    assert abs(mutant - official_compute_localization_auc(saliency, masks, pytest.importorskip("cv2").MORPH_RECT)) <= 1e-12


def test_detection_auroc_equals_official():
    rng = np.random.default_rng(7)
    folder_labels = rng.integers(0, 5, 60)  # ImageFolder indices; 'good' is index 3 (e.g. bottle)
    scores = rng.random(60) + 0.3 * (folder_labels != 3)
    scores[:6] = scores[6:12]  # ties
    ours = kdad_detection_auroc(scores, folder_labels != 3)
    assert ours == official_detection_auroc(folder_labels, scores, 3)
    assert ours == round(kdad_detection_auroc(scores, folder_labels != 3, decimals=None), 4)
