"""Adapters between a student's and a teacher's feature maps of different shapes."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from kd_lightning.errors import FeatureShapeError


class ConvRegressor(nn.Sequential):
    """FitNets' convolutional regressor (Romero et al. 2015) sized as RepDistiller's ``ConvReg``.

    Maps a student map (C_s, H_s, W_s) to the teacher's (C_t, H_t, W_t): a stride-2 3x3 conv where the
    student map is twice as large, a stride-2 4x4 transposed conv where it is half as large, otherwise a
    ``(1 + H_s - H_t) x (1 + W_s - W_t)`` conv (1x1 for equal sizes, as RepDistiller; ``kernel_size`` with
    "same" padding instead when given, e.g. the tutorial's 3x3); then BatchNorm and ReLU (``batch_norm``,
    ``relu``), which RepDistiller uses. A smaller student map that is not half the teacher's is a
    :class:`FeatureShapeError` naming both shapes.
    """

    def __init__(
        self,
        student_shape: Sequence[int],
        teacher_shape: Sequence[int],
        batch_norm: bool = True,
        relu: bool = True,
        kernel_size: int | None = None,
    ):
        (s_c, s_h, s_w), (t_c, t_h, t_w) = student_shape, teacher_shape
        if s_h == 2 * t_h and s_w == 2 * t_w:
            conv = nn.Conv2d(s_c, t_c, 3, stride=2, padding=1)
        elif 2 * s_h == t_h and 2 * s_w == t_w:
            conv = nn.ConvTranspose2d(s_c, t_c, 4, stride=2, padding=1)
        elif (s_h, s_w) == (t_h, t_w) and kernel_size is not None:
            conv = nn.Conv2d(s_c, t_c, kernel_size, padding=kernel_size // 2)
        elif s_h >= t_h and s_w >= t_w:
            conv = nn.Conv2d(s_c, t_c, (1 + s_h - t_h, 1 + s_w - t_w))
        else:
            raise FeatureShapeError(
                f"ConvRegressor: a student map {tuple(student_shape)} cannot be regressed onto the teacher's "
                f"{tuple(teacher_shape)}: it must be at least as large, or exactly half as large"
            )
        layers = [conv]
        if batch_norm:
            layers.append(nn.BatchNorm2d(t_c))
        if relu:
            layers.append(nn.ReLU())
        super().__init__(*layers)
