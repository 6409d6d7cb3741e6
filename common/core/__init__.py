"""The base every other part stands on: user errors (``errors``), atomic files (``files``), CPU threads, device,
seeds and memory (``runtime``), typed options (``config``), static graphs and Paddle Inference (``inference``) and the
files of a trained model (``checkpoint``). Nothing here knows a dataset, a metric or a method."""
