"""Every Lightning callback of kd_lightning, in one place (what ``conf/callbacks`` and ``conf/speed`` instantiate).

Defined here: quantization-aware training, the steady training rate, the learning rate as ``train/lr``. The run
callbacks that keep resume exact live next to the resume logic they serve (:mod:`kd_lightning.runs.resume`) and the
fast path next to its capture machinery (:mod:`kd_lightning.fast`); they are re-exported here.
"""

from kd_lightning.callbacks.lr import LearningRate
from kd_lightning.callbacks.quantization import QuantizationAwareTraining
from kd_lightning.callbacks.throughput import EpochThroughput
from kd_lightning.fast import FastPath
from kd_lightning.runs.resume import LastCheckpoint, LossExplosionGuard, RNGState

__all__ = [
    "EpochThroughput",
    "FastPath",
    "LastCheckpoint",
    "LearningRate",
    "LossExplosionGuard",
    "QuantizationAwareTraining",
    "RNGState",
]
