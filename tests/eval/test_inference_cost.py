"""The inference cost a two-objective search reports: ms per image of generator + selector on a tiny model."""

import math

import pytest
import torch

from hmh.config import load_config
from hmh.eval.cost import cost_metrics, measure_ms_per_image
from hmh.models.build import build_models
from hmh.results.tables import COST_KEYS
from hmh.train.loop import seed_everything

TINY = ["model.image_size=32", "model.embed_dim=16", "model.num_hypotheses=2", "model.mht_blocks=1",
        "model.num_heads=2", "selection.top_n=1", "selection.decoder_blocks=1", "train.device=cpu"]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def models():
    """The tiny models, timed on one thread as a 1-CPU Ray worker is (Ray sets OMP_NUM_THREADS from its CPUs): two
    threads on a busy 2-core machine make every pass many times slower."""
    cfg = load_config("cpu", TINY)
    seed_everything(0)
    generator, selector = build_models(cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield cfg, generator, selector
    torch.set_num_threads(threads)


def test_cost_metrics_are_ms_per_image_at_batch_1_and_8(models) -> None:
    cfg, generator, selector = models
    generator.train()
    selector.eval()
    rng = torch.random.get_rng_state()
    weights = [p.detach().clone() for p in generator.parameters()]
    cost = cost_metrics(generator, selector, cfg, CPU)
    assert list(cost) == list(COST_KEYS) == ["cost/ms_per_image_b1", "cost/ms_per_image_b8"]
    assert all(math.isfinite(v) and v > 0 for v in cost.values()), cost
    assert generator.training and not selector.training  # modes restored
    assert torch.equal(rng, torch.random.get_rng_state())  # the caller's random state untouched
    assert all(torch.equal(a, b) for a, b in zip(weights, generator.parameters(), strict=True))


def test_measurement_arguments_are_checked(models) -> None:
    cfg, generator, selector = models
    assert measure_ms_per_image(generator, selector, cfg, CPU, 2, warmup=0, repeats=1) > 0
    with pytest.raises(ValueError, match="batch=0"):
        measure_ms_per_image(generator, selector, cfg, CPU, 0)
