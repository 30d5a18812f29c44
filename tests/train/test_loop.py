"""Training and evaluation loops on a tiny config and a tiny synthetic dataset (built once per session)."""

import math
import os

import pytest
import torch
from tiny import TINY_MODEL

from hmh.config import GENERATION_OBJECTIVES, load_config
from hmh.eval.metrics import METRICS
from hmh.eval.protocol import REDUCTIONS, SELECTION_STATS
from hmh.models.build import build_models
from hmh.predict.pictures import hypothesis_grid
from hmh.train.loop import (
    TrainingError,
    evaluate,
    make_optimizer,
    make_scheduler,
    objective_key,
    seed_everything,
    train_one_epoch,
)
from hmh.train.runner import build_datasets, data_root, make_loader

TINY = [
    *TINY_MODEL,
    "data.synthetic_train=24", "data.synthetic_test=8", "data.synthetic_size=64", "data.synthetic_subframes=3",
    "data.val_fraction=0.25", "train.batch_size=4", "train.eval_batch_size=8", "train.device=cpu",
    "optim.lr=0.001", "optim.selection_lr=0.001",
]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cfg():
    return load_config("cpu", TINY)


@pytest.fixture(scope="module")
def datasets(cfg):
    return build_datasets(cfg, data_root(cfg, progress=False))


@pytest.fixture(scope="module")
def batch(cfg, datasets):
    return next(iter(make_loader(datasets["train"], cfg, train=True, device=CPU)))


def fresh_models(cfg, seed=0):
    seed_everything(seed)
    return build_models(cfg)


def test_generation_overfits_a_fixed_batch(cfg, batch):
    generator, _ = fresh_models(cfg)
    optimizer = make_optimizer("generation", generator, cfg)
    losses = [train_one_epoch("generation", generator, None, [batch], optimizer, None, cfg, CPU, step)["loss/total"]
              for step in range(8)]  # one step each: the loss before that step's update
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.7 * losses[0], losses


def test_selection_trains_selector_only_and_keeps_generator_frozen(cfg, batch):
    generator, selector = fresh_models(cfg)
    gen_state = {k: v.clone() for k, v in generator.state_dict().items()}  # includes BatchNorm running stats
    sel_before = [p.detach().clone() for p in selector.parameters()]
    optimizer = make_optimizer("selection", selector, cfg)
    losses = [train_one_epoch("selection", generator, selector, [batch], optimizer, None, cfg, CPU, step)
              ["loss/total"] for step in range(4)]
    for key, value in generator.state_dict().items():
        assert torch.equal(value, gen_state[key]), f"generator {key} changed in the selection stage"
    assert any(not torch.equal(a, b) for a, b in zip(sel_before, selector.parameters(), strict=True))
    assert not generator.training and selector.training
    assert losses[-1] < losses[0], losses


def test_training_is_reproducible_under_a_seed(cfg, batch):
    results = []
    for _ in range(2):
        generator, _ = fresh_models(cfg, seed=3)
        optimizer = make_optimizer("generation", generator, cfg)
        stats = train_one_epoch("generation", generator, None, [batch], optimizer, None, cfg, CPU, 0)
        results.append((stats["loss/total"], next(generator.parameters()).detach().clone()))
    assert results[0][0] == results[1][0]
    assert torch.equal(results[0][1], results[1][1])


def test_train_one_epoch_reports_and_logs(cfg, batch, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    generator, _ = fresh_models(cfg)
    optimizer = make_optimizer("generation", generator, cfg)
    scheduler = make_scheduler("generation", optimizer, cfg, steps_per_epoch=2)
    with SummaryWriter(str(tmp_path)) as writer:
        stats = train_one_epoch("generation", generator, None, [batch] * 2, optimizer, scheduler, cfg, CPU, 0, writer)
    assert stats["steps"] == 2 and stats["samples"] == 2 * batch["image"].shape[0]
    assert stats["samples_per_s"] > 0 and stats["grad_norm"] > 0
    assert {"loss/total", "lr"} <= set(stats)
    assert scheduler.last_epoch == 2
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())


def test_non_finite_loss_stops_with_a_clear_error(cfg, batch, monkeypatch):
    import hmh.train.losses

    generator, _ = fresh_models(cfg)
    optimizer = make_optimizer("generation", generator, cfg)

    def nan_loss(out, batch, loss_cfg):
        return {"total": out.joints.sum() * float("nan"), "joint_3d": torch.tensor(float("nan"))}

    monkeypatch.setattr(hmh.train.losses, "generation_loss", nan_loss)
    with pytest.raises(TrainingError, match="generation epoch 2 step 0: non-finite loss in total, joint_3d"):
        train_one_epoch("generation", generator, None, [batch], optimizer, None, cfg, CPU, 1)


def test_non_finite_loss_names_the_batch_samples_and_the_bad_input(cfg, batch):
    generator, _ = fresh_models(cfg)
    optimizer = make_optimizer("generation", generator, cfg)
    bad = dict(batch, joints_3d=batch["joints_3d"].clone())
    bad["joints_3d"][1, 0, 3, 2] = float("nan")
    with pytest.raises(TrainingError) as info:
        train_one_epoch("generation", generator, None, [bad], optimizer, None, cfg, CPU, 0)
    message = str(info.value)
    assert "non-finite loss in total, joint_3d (" in message and "\n" not in message
    assert f"batch samples: index {batch['index'].tolist()}; annot_id {batch['annot_id'].tolist()}" in message
    assert f"non-finite input 'joints_3d' in samples index [{int(batch['index'][1])}]" in message


def test_schedules(cfg):
    steps = 4
    param = torch.nn.Parameter(torch.zeros(1))
    gen_cfg = load_config("cpu", TINY + ["optim.milestones=[2, 3]", "optim.gamma=0.5", "optim.lr=1.0"])
    opt = make_optimizer("generation", torch.nn.Linear(1, 1), gen_cfg)
    sched = make_scheduler("generation", opt, gen_cfg, steps)
    lrs = []
    for _ in range(4 * steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:steps] == [1.0] * steps  # milestones count epochs from 1: epoch 2 is the first decayed one
    assert lrs[steps : 2 * steps] == [0.5] * steps
    assert lrs[2 * steps :] == [0.25] * 2 * steps
    sel_cfg = load_config("cpu", TINY + ["train.selection_epochs=2", "optim.selection_lr=2.0"])
    opt = torch.optim.AdamW([param], lr=2.0)
    sched = make_scheduler("selection", opt, sel_cfg, steps)
    lrs = []
    for _ in range(2 * steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 2.0 and lrs[steps] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False)) and lrs[-1] < 0.1
    assert make_optimizer("selection", torch.nn.Linear(1, 1), sel_cfg).param_groups[0]["lr"] == 2.0


def test_evaluate_returns_every_metric(cfg, datasets):
    generator, selector = fresh_models(cfg)
    loader = make_loader(datasets["val"], cfg, train=False, device=CPU)
    with_sel = evaluate(generator, selector, loader, cfg, CPU)
    expected = {f"{r}/{m}" for r in REDUCTIONS for m in METRICS} | {f"selection/{s}" for s in SELECTION_STATS}
    assert set(with_sel) == expected
    assert all(math.isfinite(v) for v in with_sel.values())
    without = evaluate(generator, None, loader, cfg, CPU)
    assert set(without) == {k for k in expected if not k.startswith(("final/", "selection/"))}
    assert without["best_of_k/mpjpe_current"] == with_sel["best_of_k/mpjpe_current"]
    assert without["best_of_k/mpjpe_current"] <= without["hyp0/mpjpe_current"]
    assert {objective_key(stage, cfg) for stage in ("generation", "selection")} <= set(with_sel)
    for source in GENERATION_OBJECTIVES:  # every generation objective is measured before a selector exists
        assert f"{source}/mpjpe_current" in without


def test_evaluate_equals_the_one_shot_protocol_on_the_same_predictions(cfg, datasets):
    """loop.evaluate against hmh.eval.metrics' one-shot functions, fed the predictions of a plain forward pass."""
    from hmh.eval import metrics as M

    generator, selector = fresh_models(cfg)
    loader = make_loader(datasets["val"], cfg, train=False, device=CPU)
    got = evaluate(generator, selector, loader, cfg, CPU)
    parts = {key: [] for key in ("joints", "verts", "scores", "gt", "valid", "mesh", "mesh_valid")}
    with torch.no_grad():
        for batch in loader:
            out = generator(batch["image"])
            parts["joints"].append(out.joints.double())  # (B, K, T, J, 3)
            parts["verts"].append((out.vertices[:, :, 1] - out.joints[:, :, 1, :1]).double())  # (B, K, V, 3)
            parts["scores"].append(selector(batch["image"], out).reward.double())  # (B, K)
            for key, name in (("gt", "joints_3d"), ("valid", "joint_valid"), ("mesh", "mesh"),
                              ("mesh_valid", "mesh_valid")):
                parts[key].append(batch[name])
    joints, verts, scores, gt, valid, mesh, mesh_valid = (torch.cat(parts[key]) for key in parts)
    top_n = cfg.selection.top_n
    final = M.aggregate(joints, scores, top_n, verts)
    mean = M.mean_of_k(joints, verts)
    expected = {
        "best_of_k": M.best_of_k(joints, gt, valid, verts, mesh, mesh_valid),
        "hyp0": M.blurhand_errors(joints[:, 0], gt, valid, verts[:, 0], mesh, mesh_valid),
        "final": M.blurhand_errors(final.joints, gt, valid, final.verts, mesh, mesh_valid),
        "mean_of_k": M.blurhand_errors(mean.joints, gt, valid, mean.verts, mesh, mesh_valid),
    }
    assert expected["best_of_k"]["mpjpe_current"] < expected["hyp0"]["mpjpe_current"]
    for reduction, metrics in expected.items():
        for metric, value in metrics.items():
            assert got[f"{reduction}/{metric}"] == pytest.approx(value, rel=1e-4), f"{reduction}/{metric}"
    precision = M.selection_precision(scores, M.sequence_errors(joints, gt, valid), top_n)
    assert got["selection/precision"] == pytest.approx(precision, rel=1e-6)


def test_hypothesis_grid(cfg, batch):
    generator, selector = fresh_models(cfg)
    generator.eval()
    selector.eval()
    with torch.no_grad():
        out = generator(batch["image"])
        scores = selector(batch["image"], out).reward
    grid = hypothesis_grid(batch, out.joints_2d, scores, cfg.selection.top_n, max_samples=2, scale=2)
    s = cfg.model.image_size
    assert grid.shape == (3, 2 * 2 * s, 3 * 2 * s) and grid.dtype == torch.uint8
    plain = hypothesis_grid(batch, out.joints_2d, None, cfg.selection.top_n, max_samples=2, scale=2)
    assert not torch.equal(grid, plain)  # the selected hypothesis is highlighted


def test_devices_resolve_and_cuda_is_refused_without_it():
    from hmh.train.loop import resolve_device

    assert resolve_device("cpu") == CPU
    if not torch.cuda.is_available():
        assert resolve_device("auto") == CPU
        with pytest.raises(TrainingError, match="train.device='cuda'"):
            resolve_device("cuda")
    with pytest.raises(TrainingError, match="device index is out of range"):
        resolve_device("cuda:99999999999999999999")


def _steps(cfg, batch, steps: int, scaler=None) -> tuple[list[float], dict]:
    """Per-step generation losses of fresh models (seed 0) on one fixed batch (one-step epochs sharing
    ``scaler``), then their evaluation on it."""
    generator, _ = fresh_models(cfg)
    optimizer = make_optimizer("generation", generator, cfg)
    losses = [train_one_epoch("generation", generator, None, [batch], optimizer, None, cfg, CPU, step,
                              scaler=scaler)["loss/total"] for step in range(steps)]
    return losses, evaluate(generator, None, [batch], cfg, CPU)


def test_bf16_trains_within_tolerance_of_fp32(cfg, batch):
    """bf16 autocast on the CPU: after the same 4 steps from the same weights, every step's loss is within 5% of
    fp32's and the evaluation within 2 mm (or 5%)."""
    from hmh.train.loop import amp_dtype, autocast

    mixed = load_config("cpu", TINY + ["train.precision=bf16"])
    assert amp_dtype(mixed) == torch.bfloat16
    generator, _ = fresh_models(mixed)
    with autocast(mixed, CPU):
        out = generator(batch["image"])
    assert amp_dtype(mixed) in {t.dtype for t in vars(out).values()}  # layers ran in the low precision
    assert out.joints.dtype == out.vertices.dtype == torch.float32  # MANO did not
    reference, ref_metrics = _steps(cfg, batch, 4)
    losses, metrics = _steps(mixed, batch, 4)
    assert all(math.isfinite(x) for x in losses)
    for got, want in zip(losses, reference, strict=True):
        assert abs(got - want) <= 0.05 * abs(want), (losses, reference)
    for key in ("mean_of_k/mpjpe_current", "best_of_k/mpjpe_current", "mean_of_k/mpvpe"):
        assert abs(metrics[key] - ref_metrics[key]) <= max(2.0, 0.05 * ref_metrics[key]), key


def test_fp16_runs_with_its_grad_scaler(batch, tmp_path):
    """fp16 autocast + GradScaler on the CPU: finite losses; the stage's one scaler keeps the scale it found across
    epochs (it starts at 65536 and halves on each overflowing step) and is saved in the checkpoint; a scaler is
    refused where it does not belong and required where it does."""
    from hmh.models.checkpoint import load_checkpoint, save_checkpoint
    from hmh.train.loop import make_scaler

    cfg = load_config("cpu", TINY + ["train.precision=fp16"])
    scaler = make_scaler(cfg, CPU)
    assert scaler is not None and make_scaler(load_config("cpu", TINY), CPU) is None
    losses, metrics = _steps(cfg, batch, 3, scaler)
    assert all(math.isfinite(x) for x in losses) and math.isfinite(metrics["mean_of_k/mpjpe_current"])
    scale = scaler.get_scale()
    assert scale < 65536.0  # overflows in the earlier epochs lowered it; a per-epoch scaler would restart there
    generator, _ = fresh_models(cfg)
    path = save_checkpoint(tmp_path / "c.pt", generator=generator, config=cfg, stage="generation", epoch=3,
                           scaler=scaler)
    resumed = make_scaler(cfg, CPU)
    resumed.load_state_dict(load_checkpoint(path)["scaler"])
    assert resumed.get_scale() == scale
    optimizer = make_optimizer("generation", generator, cfg)
    with pytest.raises(ValueError, match="GradScaler is needed for fp16"):
        train_one_epoch("generation", generator, None, [batch], optimizer, None, cfg, CPU, 0)
    with pytest.raises(ValueError, match="train.precision='fp32'"):
        train_one_epoch("generation", generator, None, [batch], optimizer, None, load_config("cpu", TINY), CPU, 0,
                        scaler=scaler)


def test_channels_last_keeps_the_outputs(batch):
    from hmh.train.loop import infer

    outputs = []
    for config in (load_config("cpu", TINY), load_config("cpu", TINY + ["train.channels_last=true"])):
        generator, selector = fresh_models(config)
        generator.eval(), selector.eval()
        out, reward = infer(generator, selector, batch, config, CPU)
        outputs.append((out.joints, reward))
    assert torch.allclose(outputs[0][0], outputs[1][0], atol=1e-5)
    assert torch.allclose(outputs[0][1], outputs[1][1], atol=1e-5)


def test_a_stored_config_with_the_old_amp_switch_is_upgraded():
    from hmh.config import from_dict, to_dict

    stored = to_dict(load_config("cpu", TINY))
    train = {k: v for k, v in stored["train"].items() if k != "precision"}
    assert from_dict(stored | {"train": train | {"amp": True}}).train.precision == "bf16"
    assert from_dict(stored | {"train": train | {"amp": False}}).train.precision == "fp32"


def test_loader_workers_come_from_the_cpus_held():
    """``data.loader_workers: -1`` sizes the loader from the run's CPUs: all but one per CUDA worker (at most 8),
    one per four on the CPU; a set count is kept, and below -1 is refused naming the key."""
    from hmh.config import ConfigError
    from hmh.train.runner import loader_workers

    auto, cuda = load_config("cpu", TINY), torch.device("cuda")
    assert auto.data.loader_workers == -1
    assert [loader_workers(auto, cuda, c) for c in (1, 2, 8, 32)] == [1, 1, 7, 8]
    assert [loader_workers(auto, CPU, c) for c in (1.99, 2, 8, 16)] == [0, 0, 2, 4]
    assert loader_workers(auto, CPU) == len(os.sched_getaffinity(0)) // 4
    assert loader_workers(load_config("cpu", TINY + ["data.loader_workers=3"]), cuda, 16) == 3
    with pytest.raises(ConfigError, match="data.loader_workers"):
        load_config("cpu", TINY + ["data.loader_workers=-2"])
