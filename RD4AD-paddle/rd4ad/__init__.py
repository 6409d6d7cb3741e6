"""RD4AD (Deng & Li, CVPR 2022) in PaddlePaddle: model, loss, scoring, training and evaluation."""
