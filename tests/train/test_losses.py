"""Losses: winner-takes-all gradients, masking, diversity, JRC against hand-computed and naive values."""

import math

import pytest
import torch

from hmh.config import LossConfig
from hmh.models.generator import GeneratorOutput
from hmh.models.selector import SelectorOutput
from hmh.train.losses import diversity_loss, generation_loss, jrc_loss, selection_loss, topn_labels

B, K, T, J, E, S = 2, 3, 3, 21, 8, 64
ONLY = {name: 0.0 for name in ("joint_3d", "proj", "mano", "aux", "diversity")}


def _output(k: int = K, seed: int = 0) -> GeneratorOutput:
    g = torch.Generator().manual_seed(seed)

    def leaf(*shape, scale=1.0, offset=0.0):
        return (torch.randn(*shape, generator=g) * scale + offset).requires_grad_()

    return GeneratorOutput(
        pose=leaf(B, k, T, 48, scale=0.3), shape=leaf(B, T, 10), camera=leaf(B, T, 3),
        joints=leaf(B, k, T, J, 3, scale=0.05), vertices=leaf(B, k, T, 778, 3, scale=0.05),
        joints_2d=leaf(B, k, T, J, 2, scale=10.0, offset=S / 2),
        unfolder_joints_2d=leaf(B, T, J, 2, scale=10.0, offset=S / 2),
        features=leaf(B, k, T, J, E), image_features=leaf(B, T, J, E),
    )


def _batch(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.rand(B, 3, S, S, generator=g),
        "joints_3d": torch.randn(B, T, J, 3, generator=g) * 0.05,
        "joints_2d": torch.rand(B, T, J, 2, generator=g) * S,
        "joint_valid": torch.ones(B, T, J),
        "mano_pose": torch.randn(B, T, 48, generator=g) * 0.3,
        "mano_shape": torch.randn(B, T, 10, generator=g),
        "mano_valid": torch.ones(B, T),
    }


def _cfg(**weights) -> LossConfig:
    return LossConfig(**{**ONLY, **weights})


@pytest.mark.parametrize(
    ("term", "pred", "gt", "per_frame"),
    [
        ("joint_3d", "joints", "joints_3d", lambda o, b: (o.joints - b["joints_3d"][:, None]).abs().mean((-1, -2))),
        ("proj", "joints_2d", "joints_2d",
         lambda o, b: (o.joints_2d - b["joints_2d"][:, None]).abs().mean((-1, -2)) * 32 / S),
        ("mano", "pose", "mano_pose", lambda o, b: (o.pose - b["mano_pose"][:, None]).abs().mean(-1)),
    ],
)
def test_winner_takes_all_gradient_reaches_only_the_winner(term, pred, gt, per_frame):
    out, batch = _output(), _batch()
    losses = generation_loss(out, batch, _cfg(**{term: 1.0}))
    losses["total"].backward()
    err = per_frame(out, batch).detach()  # (B, K, T)
    winner = err.argmin(dim=1)  # (B, T)
    grad = getattr(out, pred).grad
    norms = grad.flatten(3).abs().sum(-1)  # (B, K, T)
    for b in range(B):
        for t in range(T):
            for k in range(K):
                assert (norms[b, k, t] > 0) == (k == winner[b, t]), (b, k, t)
    expected = err.min(dim=1).values.sum(1).mean()
    if term == "mano":
        expected = expected + (out.shape - batch["mano_shape"]).abs().mean(-1).sum(1).mean()
    assert torch.allclose(losses[term], expected, atol=1e-5)


def test_sample_winner_trains_one_hypothesis_per_sample_in_every_term():
    out, batch = _output(), _batch()
    weights = {"joint_3d": 1.0, "proj": 1.0, "mano": 1.0}
    losses = generation_loss(out, batch, LossConfig(**{**ONLY, **weights, "winner": "sample"}))
    losses["total"].backward()
    joint_err = (out.joints - batch["joints_3d"][:, None]).abs().mean((-1, -2)).detach()  # (B, K, T)
    winner = joint_err.sum(dim=2).argmin(dim=1)  # (B,): by the whole sequence's 3D joint error
    frame_winner = joint_err.argmin(dim=1)  # (B, T)
    assert not (frame_winner == winner[:, None]).all(), "fixture must make the two rules differ"
    for pred in ("joints", "joints_2d", "pose"):
        norms = getattr(out, pred).grad.flatten(3).abs().sum(-1)  # (B, K, T)
        for b in range(B):
            for k in range(K):
                assert bool((norms[b, k] > 0).all()) == (k == winner[b]), (pred, b, k)
    rows = torch.arange(B)
    assert torch.allclose(losses["joint_3d"], joint_err[rows, winner].sum(1).mean(), atol=1e-6)
    proj_err = (out.joints_2d - batch["joints_2d"][:, None]).abs().mean((-1, -2)).detach() * 32 / S
    assert torch.allclose(losses["proj"], proj_err[rows, winner].sum(1).mean(), atol=1e-5)
    frame = generation_loss(out, batch, LossConfig(**{**ONLY, **weights}))
    assert frame["joint_3d"] < losses["joint_3d"]  # per-frame minima are never above one sequence's errors


def test_winner_rule_is_validated():
    from hmh.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="loss.winner"):
        load_config("cpu", ["loss.winner=term"])
    assert load_config("cpu", ["loss.winner=sample"]).loss.winner == "sample"


def test_single_hypothesis_is_plain_l1_and_no_diversity():
    out, batch = _output(k=1), _batch()
    losses = generation_loss(out, batch, LossConfig())
    plain = (out.joints[:, 0] - batch["joints_3d"]).abs().mean((-1, -2)).sum(1).mean()
    assert torch.allclose(losses["joint_3d"], plain)
    assert float(losses["diversity"].detach()) == 0.0
    cfg = LossConfig()
    weighted = sum(getattr(cfg, name) * losses[name] for name in ONLY)
    assert torch.allclose(losses["total"], weighted)


def test_invalid_joints_frames_and_mano_are_masked():
    out, batch = _output(), _batch()
    batch["joint_valid"][0, 1, :5] = 0  # some joints of one frame
    batch["joint_valid"][1, 2] = 0  # a whole frame
    batch["mano_valid"][1] = 0
    batch["joints_2d"][0, 0, 7] = torch.tensor([-3.0, 10.0])  # outside the crop: no 2D supervision
    reference = generation_loss(out, batch, LossConfig())
    changed = {k: v.clone() for k, v in batch.items()}
    changed["joints_3d"][0, 1, :5] += 1.0
    changed["joints_3d"][1, 2] += 1.0
    changed["joints_2d"][0, 1, :5] += 7.0
    changed["joints_2d"][0, 0, 7] = torch.tensor([-30.0, 10.0])
    changed["mano_pose"][1] += 1.0
    changed["mano_shape"][1] += 1.0
    again = generation_loss(out, changed, LossConfig())
    for name in reference:
        assert torch.allclose(reference[name], again[name]), name
    changed["joints_3d"][0, 1, 6] += 1.0  # a valid joint does count
    assert not torch.allclose(generation_loss(out, changed, LossConfig())["joint_3d"], reference["joint_3d"])


def test_aux_loss_is_the_unfolder_2d_error():
    out, batch = _output(), _batch()
    with torch.no_grad():
        out.unfolder_joints_2d.copy_(batch["joints_2d"] + 2.0)  # 2 px off in x and y everywhere
    aux = generation_loss(out, batch, _cfg(aux=1.0))["aux"]
    assert torch.allclose(aux, torch.tensor(T * 2.0 * 32 / S), atol=1e-5)


def test_diversity_loss_values_and_direction():
    feats = torch.zeros(1, 2, T, J, E)
    assert torch.allclose(diversity_loss(feats, 1.0), torch.tensor(T * 1.0 / 2))  # 1/(K(K-1)) * T pairs of exp(0)
    feats[:, 1] += 0.5  # every feature differs by 0.5: mean L1 = 0.5
    assert torch.allclose(diversity_loss(feats, 2.0), torch.tensor(T * math.exp(-0.25) / 2))
    three = torch.randn(2, 3, T, J, E, requires_grad=True)
    naive = sum(
        torch.exp(-(three[:, a, t] - three[:, m, t]).abs().mean((-1, -2)) / 0.7)
        for a in range(3) for m in range(a + 1, 3) for t in range(T)
    ).mean() / 6
    assert torch.allclose(diversity_loss(three, 0.7), naive, atol=1e-6)
    loss = diversity_loss(three, 0.7)
    loss.backward()
    with torch.no_grad():
        assert diversity_loss(three - 0.5 * three.grad, 0.7) < loss  # a gradient step spreads the hypotheses


def test_jrc_matches_hand_computed_value():
    """An asymmetric image (K = 3), so calibration and ranking differ and each alpha expects its own number."""
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    labels = torch.tensor([[1, 0, 0]])
    e = math.e
    # calibration, -log softmax over the 2 logits at y^k: k=0 (y=1) log(1+e^2); k=1 (y=0) log(1+e); k=2 (y=0) log 2
    calib = (math.log(1 + e**2) + math.log(1 + e) + math.log(2)) / 3
    # ranking, -log softmax over the K hypotheses on channel y^k: channel 1 holds (0, 1, 1), channel 0 (2, 0, 1)
    # k=0: log(1+2e); k=1: log(e^2+1+e) - 0; k=2: log(e^2+1+e) - 1
    rank = (math.log(1 + 2 * e) + 2 * math.log(1 + e + e**2) - 1) / 3
    assert abs(calib - rank) > 0.5
    for alpha in (0.0, 0.3, 1.0):
        expected = alpha * calib + (1 - alpha) * rank
        assert math.isclose(float(jrc_loss(logits, labels, alpha)), expected, rel_tol=1e-6), alpha


def _naive_jrc(logits, labels, alpha, valid):
    total, images = 0.0, 0
    for b in range(logits.shape[0]):
        if not valid[b]:
            continue
        per = []
        for k in range(logits.shape[1]):
            y = int(labels[b, k])
            f = [[float(v) for v in row] for row in logits[b]]
            calib = -math.log(math.exp(f[k][y]) / (math.exp(f[k][0]) + math.exp(f[k][1])))
            rank = -math.log(math.exp(f[k][y]) / sum(math.exp(f[m][y]) for m in range(len(f))))
            per.append(alpha * calib + (1 - alpha) * rank)
        total += sum(per) / len(per)
        images += 1
    return total / images


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_jrc_matches_naive_loop_with_masking(alpha):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 4, 2, generator=g) * 2
    labels = torch.randint(0, 2, (5, 4), generator=g)
    valid = torch.tensor([True, False, True, True, False])
    got = jrc_loss(logits, labels, alpha, valid)
    assert math.isclose(float(got), _naive_jrc(logits, labels, alpha, valid), rel_tol=1e-5)
    logits[1] = float("nan")  # an invalid image may hold anything
    assert math.isclose(float(jrc_loss(logits, labels, alpha, valid)), float(got), rel_tol=1e-6)
    assert math.isclose(float(jrc_loss(logits[[0, 2, 3]], labels[[0, 2, 3]], alpha)), float(got), rel_tol=1e-6)


def test_jrc_without_valid_images_is_zero_with_graph():
    logits = torch.randn(2, 3, 2, requires_grad=True)
    loss = jrc_loss(logits, torch.zeros(2, 3), 0.5, torch.zeros(2, dtype=torch.bool))
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(logits.grad.abs().sum()) == 0.0
    with pytest.raises(ValueError, match="logits"):
        jrc_loss(torch.randn(2, 3), torch.zeros(2, 3), 0.5)


def test_topn_labels_ties_and_nan():
    err = torch.tensor([[3.0, 1.0, 2.0, 1.0], [float("nan"), 5.0, 4.0, 6.0]])
    assert topn_labels(err, 2).tolist() == [[0, 1, 0, 1], [0, 1, 1, 0]]
    assert topn_labels(err, 1).tolist() == [[0, 1, 0, 0], [0, 0, 1, 0]]
    with pytest.raises(ValueError, match="top_n"):
        topn_labels(err, 5)


def test_selection_loss_labels_come_from_sequence_errors():
    out, batch = _output(), _batch()
    with torch.no_grad():  # hypothesis errors ordered 2 < 0 < 1 for image 0 and 1 < 2 < 0 for image 1
        offsets = torch.tensor([[0.02, 0.05, 0.0], [0.06, 0.0, 0.03]])
        not_wrist = (torch.arange(J) > 0).float()[:, None]  # (J, 1): errors are measured wrist-relative
        out.joints.copy_(batch["joints_3d"][:, None] + offsets[:, :, None, None, None] * not_wrist)
    batch["joint_valid"][1] = 0  # image 1 has no valid joint: masked
    logits = torch.randn(B, K, 2, requires_grad=True)
    sel = SelectorOutput(logits, torch.sigmoid(logits[..., 1] - logits[..., 0]), out.unfolder_joints_2d)
    cfg = LossConfig(jrc=2.0, aux=0.5, jrc_alpha=0.4)
    losses = selection_loss(sel, out, batch, cfg, top_n=1)
    expected = jrc_loss(logits, torch.tensor([[0, 0, 1], [0, 1, 0]]), 0.4, torch.tensor([True, False]))
    assert torch.allclose(losses["jrc"], expected)
    assert torch.allclose(losses["total"], 2.0 * losses["jrc"] + 0.5 * losses["aux"])
    losses["total"].backward()
    assert float(logits.grad[1].abs().sum()) == 0.0 and float(logits.grad[0].abs().sum()) > 0


@pytest.mark.parametrize("winner", ["frame", "sample"])
def test_mode_hypothesis_takes_every_sample_and_stays_out_of_the_winner_takes_all(winner):
    out, batch = _output(), _batch()
    cfg = LossConfig(**{**ONLY, "joint_3d": 1.0, "winner": winner, "mode_hypothesis": True})
    losses = generation_loss(out, batch, cfg)
    losses["total"].backward()
    err = (out.joints - batch["joints_3d"][:, None]).abs().mean((-1, -2)).detach()  # (B, K, T)
    rest = err[:, 1:]  # (B, K-1, T)
    if winner == "frame":
        won = rest.min(dim=1).values  # (B, T)
        chosen = rest.argmin(dim=1)[:, None] + 1  # (B, 1, T): hypothesis index of each frame's winner
    else:
        best = rest.sum(dim=2).argmin(dim=1)  # (B,)
        won = rest[torch.arange(B), best]  # (B, T)
        chosen = (best[:, None, None] + 1).expand(B, 1, T)
    assert torch.allclose(losses["joint_3d"], (err[:, 0] + won).sum(1).mean(), atol=1e-6)
    norms = out.joints.grad.flatten(3).abs().sum(-1)  # (B, K, T)
    assert (norms[:, 0] > 0).all()  # the mode learns from every sample and frame
    trained = torch.zeros(B, K, T, dtype=torch.bool).scatter_(1, chosen, True)
    assert torch.equal(norms[:, 1:] > 0, trained[:, 1:])
    plain = generation_loss(out, batch, LossConfig(**{**ONLY, "joint_3d": 1.0, "winner": winner}))
    assert plain["joint_3d"] < losses["joint_3d"]


def test_mode_hypothesis_needs_a_second_hypothesis():
    from hmh.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"loss.mode_hypothesis=True is invalid: .*K >= 2"):
        load_config("cpu", ["model.num_hypotheses=1", "selection.top_n=1", "loss.mode_hypothesis=true"])
    assert load_config("cpu", ["model.num_hypotheses=2", "loss.mode_hypothesis=true"]).loss.mode_hypothesis
