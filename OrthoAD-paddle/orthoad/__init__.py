"""OrthoAD (semi-orthogonal embedding, Kim et al. 2021) and PaDiM in PaddlePaddle.

Modules: ``projection`` (W), ``gaussian`` (streaming statistics, Cholesky), ``model`` (Paddle layers),
``metric`` (official OrthoAD protocol), ``trainer`` (fit / evaluate / load), ``options`` (command line),
``storage`` (.npy model files).
"""
