"""torch when it is installed, else stand-ins that let the torch reference modules be imported.

The PyTorch re-statements of the official code define ``nn.Module`` subclasses at import. Without torch those class
statements still have to run so that pytest collects the module; ``requires_torch`` then skips each test that needs
torch on its own, and every other test of the suite runs (``tests/test_efficientad.py`` and the method tests need no
torch). The stand-ins are never called: a test that would call them is skipped.
"""
import types

import pytest

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ModuleNotFoundError:
    torch = None
    F = None
    nn = types.SimpleNamespace(Module=object)  # the reference classes' base while they are only defined

requires_torch = pytest.mark.skipif(torch is None, reason="needs torch (pip install torch==2.13.0, the CPU build)")
