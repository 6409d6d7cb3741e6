"""Training glue every trained method shares: the optimiser (``optimizer``), the trained convolutions on oneDNN
(``onednn``), frozen teachers and backbones in Paddle Inference (``frozen``), the epoch loop with its NaN stop
(``loop``), resumable training states (``state``), the training log (``log``) and data-parallel runs
(``distributed``)."""
