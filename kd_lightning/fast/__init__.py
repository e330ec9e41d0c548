"""The fast path: a layer the training schemes do not see (see :mod:`kd_lightning.fast.callback`)."""

from kd_lightning.fast.bias_grad import MatmulBiasGradConv2d, use_matmul_bias_grad
from kd_lightning.fast.callback import FastPath
from kd_lightning.fast.capture import CapturedStep
from kd_lightning.fast.lightning import CheapHookLabels, no_unused_step_hooks, stored_signature
from kd_lightning.fast.optim import graph_safe_optimizer
from kd_lightning.fast.options import SpeedOptions

__all__ = [
    "CapturedStep",
    "CheapHookLabels",
    "FastPath",
    "MatmulBiasGradConv2d",
    "SpeedOptions",
    "graph_safe_optimizer",
    "no_unused_step_hooks",
    "stored_signature",
    "use_matmul_bias_grad",
]
