"""ResNet backbone (torchvision): the pooled image feature ``F_B`` and the stride-8/16/32 maps for the Unfolder.

As in BlurHandNet, images go in scaled to ``[0, 1]`` without ImageNet mean/std normalisation, also when the
ImageNet weights are used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from hmh.config import BACKBONES

# torchvision builder and ImageNet weights enum per backbone name
_BUILDERS = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (torchvision.models.resnet34, torchvision.models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V1),
}


@dataclass
class BackboneFeatures:
    """``pooled (B, C32)`` global-average-pooled ``F_B``; ``stride8 (B, C8, S/8, S/8)``,
    ``stride16 (B, C16, S/16, S/16)``, ``stride32 (B, C32, S/32, S/32)`` feature maps."""

    pooled: torch.Tensor
    stride8: torch.Tensor
    stride16: torch.Tensor
    stride32: torch.Tensor


class Backbone(nn.Module):
    """torchvision ResNet-18/34/50 without its classifier.

    ``pretrained=True`` loads torchvision's ImageNet weights (downloaded once into the torch hub cache; needs
    internet the first time). Attributes ``channels = (C8, C16, C32)``: 128/256/512 for ResNet-18/34,
    512/1024/2048 for ResNet-50.
    """

    def __init__(self, name: str = "resnet18", pretrained: bool = False) -> None:
        super().__init__()
        if name not in _BUILDERS:
            raise ValueError(f"model.backbone={name!r} is invalid: expected one of {', '.join(BACKBONES)}")
        builder, weights = _BUILDERS[name]
        net = builder(weights=weights if pretrained else None)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        expansion = 4 if name == "resnet50" else 1
        self.channels = (128 * expansion, 256 * expansion, 512 * expansion)

    def forward(self, image: torch.Tensor) -> BackboneFeatures:
        """``image (B, 3, S, S)`` in ``[0, 1]`` -> :class:`BackboneFeatures`."""
        x = self.layer1(self.stem(image))  # (B, C4, S/4, S/4)
        stride8 = self.layer2(x)  # (B, C8, S/8, S/8)
        stride16 = self.layer3(stride8)  # (B, C16, S/16, S/16)
        stride32 = self.layer4(stride16)  # (B, C32, S/32, S/32)
        return BackboneFeatures(stride32.mean(dim=(2, 3)), stride8, stride16, stride32)
