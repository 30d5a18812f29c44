"""ResNet backbone (torchvision): the pooled image feature ``F_B`` and the stride-8/16/32 maps for the Unfolder.

As in BlurHandNet, images go in scaled to ``[0, 1]`` without ImageNet mean/std normalisation, also when the
ImageNet weights are used.

``model.pretrained``: torchvision's ImageNet weights, read from torch hub's cache (:func:`imagenet_weights_file`:
``$TORCH_HOME/hub/checkpoints/``, default ``~/.cache/torch/hub/checkpoints/``) with ``weights_only``. A missing file
is downloaded there once, saying so first; without a network that is one :class:`PretrainedWeightsError` line
naming the file to provide.
"""

from __future__ import annotations

import logging
import re
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from hmh.config import BACKBONES
from hmh.errors import HmhError

log = logging.getLogger(__name__)

# torchvision builder and ImageNet weights enum per backbone name
_BUILDERS = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (torchvision.models.resnet34, torchvision.models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V1),
}


class PretrainedWeightsError(HmhError):
    """``model.pretrained`` weights that are neither in torch hub's cache nor downloadable, or unreadable there."""


def imagenet_weights_file(name: str) -> Path:
    """Where torchvision keeps backbone ``name``'s ImageNet weights: ``<torch.hub.get_dir()>/checkpoints/<file>``
    (``$TORCH_HOME/hub``, else ``$XDG_CACHE_HOME/torch/hub``, else ``~/.cache/torch/hub``)."""
    url = _BUILDERS[name][1].url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _download(name: str, path: Path, echo: Callable[[str], None]) -> None:
    """Download ``name``'s ImageNet weights to ``path`` (its hash checked), saying so through ``echo`` first."""
    url = _BUILDERS[name][1].url
    echo(f"model.pretrained: downloading the ImageNet weights of {name} (once) from {url} to {path}")
    digest = re.search(r"-([a-f0-9]+)\.", path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), digest.group(1) if digest else None, progress=False)
    except (OSError, RuntimeError) as err:  # URLError (no network) is an OSError; a wrong hash a RuntimeError
        reason = err.reason if isinstance(err, urllib.error.URLError) else getattr(err, "strerror", None) or err
        raise PretrainedWeightsError(
            f"model.pretrained=true: the ImageNet weights of {name} are not in {path.parent} and cannot be "
            f"downloaded ({reason}): put {path.name} (from {url}) there, or point TORCH_HOME at a folder whose "
            "hub/checkpoints/ holds it (e.g. on shared storage for a cluster's nodes), or set "
            "model.pretrained=false") from None


def imagenet_weights(name: str, echo: Callable[[str], None] = log.warning) -> dict[str, torch.Tensor]:
    """Backbone ``name``'s ImageNet state dict from :func:`imagenet_weights_file`, downloaded there first when it
    is missing (never silently: ``echo`` says so). Raises :class:`PretrainedWeightsError` naming ``model.pretrained``
    and the file when it can be neither found nor downloaded, or is not a readable weights file."""
    path = imagenet_weights_file(name)
    if not path.is_file():
        _download(name, path, echo)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated or foreign files raise many exception types
        raise PretrainedWeightsError(
            f"model.pretrained=true: {path}: not a readable weights file ({type(err).__name__}); delete it to "
            f"download it again, or replace it with {_BUILDERS[name][1].url}") from None


@dataclass
class BackboneFeatures:
    """``pooled (B, C32)`` global-average-pooled ``F_B``; ``stride4 (B, C4, S/4, S/4)``, ``stride8 (B, C8, S/8, S/8)``,
    ``stride16 (B, C16, S/16, S/16)``, ``stride32 (B, C32, S/32, S/32)`` feature maps."""

    pooled: torch.Tensor
    stride4: torch.Tensor
    stride8: torch.Tensor
    stride16: torch.Tensor
    stride32: torch.Tensor


class Backbone(nn.Module):
    """torchvision ResNet-18/34/50 without its classifier.

    ``pretrained=True`` loads torchvision's ImageNet weights (:func:`imagenet_weights`: from torch hub's cache,
    downloaded there once, saying so). Attributes ``channels = (C8, C16, C32)``: 128/256/512 for ResNet-18/34,
    512/1024/2048 for ResNet-50; ``stride4_channels = C4``: 64, or 256 for ResNet-50.
    """

    def __init__(self, name: str = "resnet18", pretrained: bool = False) -> None:
        super().__init__()
        if name not in _BUILDERS:
            raise ValueError(f"model.backbone={name!r} is invalid: expected one of {', '.join(BACKBONES)}")
        net = _BUILDERS[name][0](weights=None)
        if pretrained:  # as torchvision's builder does with weights=..., but loaded with weights_only
            net.load_state_dict(imagenet_weights(name))
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        expansion = 4 if name == "resnet50" else 1
        self.channels = (128 * expansion, 256 * expansion, 512 * expansion)
        self.stride4_channels = 64 * expansion

    def forward(self, image: torch.Tensor) -> BackboneFeatures:
        """``image (B, 3, S, S)`` in ``[0, 1]`` -> :class:`BackboneFeatures`."""
        stride4 = self.layer1(self.stem(image))  # (B, C4, S/4, S/4)
        stride8 = self.layer2(stride4)  # (B, C8, S/8, S/8)
        stride16 = self.layer3(stride8)  # (B, C16, S/16, S/16)
        stride32 = self.layer4(stride16)  # (B, C32, S/32, S/32)
        return BackboneFeatures(stride32.mean(dim=(2, 3)), stride4, stride8, stride16, stride32)
