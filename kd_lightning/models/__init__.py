"""Plain networks (teachers and students). They know nothing of distillation.

The CIFAR zoo (RepDistiller's architectures, its state-dict keys): :class:`CifarResNet`, :class:`WideResNet`,
:class:`VGG`, :class:`MobileNetV2`, :class:`ShuffleNetV1`, :class:`ShuffleNetV2`; by name with :func:`build`.
"""

from kd_lightning.models.adapter import TeacherAdapter
from kd_lightning.models.cifar_resnet import CifarResNet
from kd_lightning.models.hub import timm_model, torchvision_model
from kd_lightning.models.mlp import MLP
from kd_lightning.models.mobilenetv2 import MobileNetV2
from kd_lightning.models.registry import build, names
from kd_lightning.models.shufflenet import ShuffleNetV1, ShuffleNetV2
from kd_lightning.models.tutorial import DeepNN, LightNN
from kd_lightning.models.vgg import VGG
from kd_lightning.models.wrn import WideResNet

__all__ = [
    "CifarResNet",
    "DeepNN",
    "LightNN",
    "MLP",
    "MobileNetV2",
    "ShuffleNetV1",
    "ShuffleNetV2",
    "VGG",
    "WideResNet",
    "build",
    "names",
    "TeacherAdapter",
    "timm_model",
    "torchvision_model",
]
