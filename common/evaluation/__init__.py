"""Evaluating a trained detector: its maps over a dataset (``collect``), the standard metrics and the results JSON
(``evaluate``, ``results``), the decision thresholds calibrated on normal images (``thresholds``) and the pictures
(``pictures``)."""
