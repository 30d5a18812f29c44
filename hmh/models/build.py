"""Build the two models from a config, and reach the plain module inside training wrappers.

Below both :mod:`hmh.train.loop` (which trains the models) and :mod:`hmh.models.checkpoint` (which rebuilds
them from a file),
so neither imports the other.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from hmh.config import Config

__all__ = ["build_models", "unwrap"]


def build_models(cfg: Config, *, pretrained: bool | None = None) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(Generator, Selector)`` on the CPU, the generator with the right-hand MANO of ``model.mano_path``.

    ``pretrained`` overrides ``model.pretrained`` (``False`` when the weights are about to be replaced, e.g. from a
    checkpoint, so nothing is downloaded); ``None`` keeps the config's choice."""
    from hmh.mano.model import Mano, model_path
    from hmh.models.generator import Generator
    from hmh.models.selector import Selector

    model_cfg = cfg.model if pretrained is None else replace(cfg.model, pretrained=pretrained)
    mano = Mano(model_path(model_cfg.mano_path, "right"), side="right")
    generator = Generator(model_cfg, mano)
    selector = Selector(model_cfg, cfg.selection)
    if cfg.train.channels_last:  # 4-D weights (the convolutions) only; the loop feeds channels_last images
        generator, selector = (m.to(memory_format=torch.channels_last) for m in (generator, selector))
    if cfg.train.compile:
        generator, selector = torch.compile(generator), torch.compile(selector)
    return generator, selector


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DistributedDataParallel / DataParallel (``.module``) and ``torch.compile``
    (``._orig_mod``) wrappers, so state-dict keys never carry a wrapper prefix."""
    while True:
        inner = getattr(module, "module", None) or getattr(module, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return module
        module = inner
