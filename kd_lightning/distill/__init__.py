"""How knowledge moves: feature taps, loss terms with their adapters, frozen teachers."""

from kd_lightning.distill.cache import TeacherCache
from kd_lightning.distill.crd import CRD
from kd_lightning.distill.data_free import DAFLGeneratorLoss
from kd_lightning.distill.ensemble import TeacherEnsemble, load_teachers
from kd_lightning.distill.feature import PKT, AttentionTransfer
from kd_lightning.distill.relation import FSP, RKD, SimilarityPreserving
from kd_lightning.distill.response import DIST, DKD, StandardizedKD
from kd_lightning.distill.self_distillation import ExitHead, TfKDVirtualTeacher
from kd_lightning.distill.taps import FeatureTaps, Outputs
from kd_lightning.distill.teacher import load_teacher
from kd_lightning.distill.teachers import CachedTeacher, EnsembleTeacher, FrozenTeacher, Teacher
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
    "CachedTeacher",
    "EnsembleTeacher",
    "FrozenTeacher",
    "Teacher",
    "DAFLGeneratorLoss",
    "CRD",
    "TeacherEnsemble",
    "load_teachers",
    "AttentionTransfer",
    "CosineFeature",
    "CrossEntropy",
    "DIST",
    "DKD",
    "ExitHead",
    "FSP",
    "FeatureTaps",
    "FeatureTerm",
    "HintMSE",
    "LossTerm",
    "Outputs",
    "PKT",
    "RKD",
    "SimilarityPreserving",
    "SoftTargetKD",
    "TeacherCache",
    "StandardizedKD",
    "TfKDVirtualTeacher",
    "load_teacher",
    "soft_target_kl",
]
