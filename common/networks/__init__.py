"""Paddle layers every method builds on: the frozen ImageNet backbones and their weights (``backbones``), and the map
post-processing that also runs inside exported graphs (``postprocess``: Gaussian smoothing, interpolation as constant
matrices)."""
