"""Running trained models outside training: the predict loop over image files (``predict``), exporting a detector to
one static graph (``export``), the self-describing exported folder (``folder``), the runtimes that run it
(``backends``: Paddle Inference, ONNX Runtime, OpenVINO), the web demo (``app``) and the timers (``benchmark``)."""
