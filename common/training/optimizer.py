"""The optimiser every trainer uses."""


def adam(parameters, learning_rate, beta1=0.9, beta2=0.999, epsilon=1e-8, weight_decay=None):
    """``paddle.optimizer.Adam`` (torch's Adam: coupled L2 ``weight_decay``) updating all parameters at once.

    ``use_multi_tensor`` fuses the per-parameter updates: on 2 CPU threads it cut RD4AD's WRN50 training step
    (batch 16, 256 px) from 8.2x to 1.9x the torch step (measured side by side), with the same losses to 2e-6.
    """
    import paddle

    return paddle.optimizer.Adam(learning_rate=learning_rate, beta1=beta1, beta2=beta2, epsilon=epsilon,
                                 weight_decay=weight_decay, parameters=parameters, use_multi_tensor=True)
