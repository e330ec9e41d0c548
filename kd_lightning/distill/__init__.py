"""How knowledge moves: feature taps, loss terms with their adapters, frozen teachers."""

from kd_lightning.distill.taps import FeatureTaps, Outputs
from kd_lightning.distill.teacher import load_teacher
from kd_lightning.distill.terms import (
    CosineFeature,
    CrossEntropy,
    FeatureTerm,
    HintMSE,
    LossTerm,
    SoftTargetKD,
    soft_target_kl,
)

__all__ = [
    "CosineFeature",
    "CrossEntropy",
    "FeatureTaps",
    "FeatureTerm",
    "HintMSE",
    "LossTerm",
    "Outputs",
    "SoftTargetKD",
    "load_teacher",
    "soft_target_kl",
]
