"""BlurHand protocol and multi-hypothesis reductions: hand-computed cases, the NaN matching rule, aggregation
order, oracle without frame mixing, streaming == one-shot, and a loop-based reference implementation."""

import math

import numpy as np
import pytest
import torch

from hmh.eval import metrics as M
from hmh.eval import protocol as E
from hmh.eval.report import metric_table, selection_verdict

T, J = 3, 21


def _hand(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, T, J, 3)`` plausible joints in metres (wrist at a random camera position)."""
    return rng.normal(scale=0.04, size=(n, T, J, 3)) + rng.normal(scale=0.3, size=(n, 1, 1, 3))


def _offset(joints: np.ndarray, frame: int, joint: int, mm: float) -> np.ndarray:
    """Copy of ``(T, J, 3)`` joints with one joint moved by ``mm`` along x."""
    out = joints.copy()
    out[frame, joint, 0] += mm / 1000
    return out


# ---------------------------------------------------------------- loop-based reference (written from the protocol)


def _dist_mm(a, b) -> float:
    return math.sqrt(sum((float(x) - float(y)) ** 2 for x, y in zip(a, b, strict=True))) * 1000


def _reference(pred, gt, valid, pred_verts=None, gt_verts=None, mesh_valid=None) -> dict:
    """BlurHandNet's evaluate(), one sample and one joint at a time, with plain Python lists."""
    lists = {name: [[] for _ in range(J)] for name in ("mpjpe_past", "mpjpe_current", "mpjpe_future")}
    vertex_errors = []
    for i in range(len(pred)):
        p = [[[pred[i][t][j][c] - pred[i][t][0][c] for c in range(3)] for j in range(J)] for t in range(T)]
        g = [[[gt[i][t][j][c] - gt[i][t][0][c] for c in range(3)] for j in range(J)] for t in range(T)]
        v = valid[i]
        past_pf, past_fp, fut_pf, fut_fp = [], [], [], []
        for j in range(J):
            if v[0][j]:
                past_pf.append(_dist_mm(p[0][j], g[0][j]))
                past_fp.append(_dist_mm(p[2][j], g[0][j]))
            if v[2][j]:
                fut_pf.append(_dist_mm(p[2][j], g[2][j]))
                fut_fp.append(_dist_mm(p[0][j], g[2][j]))

        def mean(xs):
            return sum(xs) / len(xs) if xs else float("nan")

        keep = mean(past_pf) + mean(fut_pf) <= mean(past_fp) + mean(fut_fp)
        for j in range(J):
            if v[1][j]:
                lists["mpjpe_current"][j].append(_dist_mm(p[1][j], g[1][j]))
            if v[0][j]:
                lists["mpjpe_past"][j].append(_dist_mm(p[0][j] if keep else p[2][j], g[0][j]))
            if v[2][j]:
                lists["mpjpe_future"][j].append(_dist_mm(p[2][j] if keep else p[0][j], g[2][j]))
        if pred_verts is not None and (mesh_valid is None or mesh_valid[i]):
            vertex_errors.append(sum(_dist_mm(a, b) for a, b in zip(pred_verts[i], gt_verts[i], strict=True)))
            vertex_errors[-1] /= len(pred_verts[i])
    out = {}
    for name, per_joint in lists.items():
        means = [sum(xs) / len(xs) for xs in per_joint if xs]
        out[name] = sum(means) / len(means) if means else float("nan")
    out["mpvpe"] = sum(vertex_errors) / len(vertex_errors) if vertex_errors else float("nan")
    return out


def _reference_best_of_k(pred, gt, valid):
    """Loop oracle: per sample the index of the best hypothesis for current and for past+future."""
    best_current, best_ends = [], []
    for i in range(len(pred)):
        cur, ends = [], []
        for k in range(len(pred[i])):
            one = _reference(pred[i : i + 1, k], gt[i : i + 1], valid[i : i + 1])  # one sample: per-frame means
            cur.append(math.inf if math.isnan(one["mpjpe_current"]) else one["mpjpe_current"])
            ends.append(sum(x for x in (one["mpjpe_past"], one["mpjpe_future"]) if not math.isnan(x)))
        best_current.append(min(range(len(cur)), key=lambda k, c=cur: (c[k], k)))
        best_ends.append(min(range(len(ends)), key=lambda k, e=ends: (e[k], k)))
    return np.array(best_current), np.array(best_ends)


def _random_case(seed: int, n: int, k: int = 0, p_invalid: float = 0.3):
    rng = np.random.default_rng(seed)
    gt = _hand(rng, n)
    shape = (n, k) if k else (n,)
    pred = gt.reshape((n,) + (1,) * bool(k) + (T, J, 3)) + rng.normal(scale=0.02, size=shape + (T, J, 3))
    valid = (rng.random((n, T, J)) > p_invalid).astype(np.float32)
    valid[0, 0] = 0  # a sample whose past frame has no valid joint: the NaN matching rule
    valid[1, 2] = 0  # and one whose future frame has none
    gt_verts = rng.normal(scale=0.05, size=(n, 50, 3))
    pred_verts = gt_verts.reshape((n,) + (1,) * bool(k) + (50, 3)) + rng.normal(scale=0.01, size=shape + (50, 3))
    mesh_valid = (rng.random(n) > 0.3).astype(np.float32)
    return pred, gt, valid, pred_verts, gt_verts, mesh_valid


# ---------------------------------------------------------------- single prediction


def test_hand_computed_current_and_wrist_relative():
    gt = _hand(np.random.default_rng(0), 1)
    pred = gt.copy()
    pred[0, 1, 7] += [0.003, 0.004, 0.0]  # 5 mm on one current joint
    pred[0] += [0.1, -0.2, 0.3]  # a global shift is removed by the wrist
    out = M.blurhand_errors(pred, gt, np.ones((1, T, J)))
    assert out["mpjpe_current"] == pytest.approx(5 / 21)
    assert out["mpjpe_past"] == pytest.approx(0, abs=1e-9)
    assert out["mpjpe_future"] == pytest.approx(0, abs=1e-9)
    assert math.isnan(out["mpvpe"])


def test_wrist_error_moves_every_other_joint():
    gt = _hand(np.random.default_rng(1), 1)
    pred = gt.copy()
    pred[0, 1, 0, 2] += 0.01  # wrist 10 mm off: every other joint is 10 mm off wrist-relative
    out = M.blurhand_errors(pred, gt, np.ones((1, T, J)))
    assert out["mpjpe_current"] == pytest.approx(20 * 10 / 21)


def test_per_joint_then_mean_differs_from_mean_over_pairs_and_per_sample():
    gt = _hand(np.random.default_rng(2), 2)
    pred = gt.copy()
    pred[0, 1, 1, 0] += 0.010  # sample 0: joint 1 at 10 mm, all joints valid
    pred[1, 1, 1, 0] += 0.040  # sample 1: joint 1 at 40 mm, only joints 0 and 1 valid
    valid = np.ones((2, T, J))
    valid[1, 1, 2:] = 0
    out = M.blurhand_errors(pred, gt, valid)
    per_joint_then_mean = (10 + 40) / 2 / 21
    over_pairs = (10 + 40) / (21 + 2)
    per_sample = (10 / 21 + 40 / 2) / 2
    assert out["mpjpe_current"] == pytest.approx(per_joint_then_mean)
    assert abs(out["mpjpe_current"] - over_pairs) > 0.5
    assert abs(out["mpjpe_current"] - per_sample) > 5


def test_invalid_joints_are_excluded():
    pred, gt, valid, *_ = _random_case(3, 6)
    valid[:, :, 0] = 1  # wrists valid, so the garbage only lands on non-wrist invalid joints
    garbage = pred.copy()
    garbage[valid == 0] += 5.0  # metres off
    assert M.blurhand_errors(garbage, gt, valid) == pytest.approx(M.blurhand_errors(pred, gt, valid), nan_ok=True)
    assert M.blurhand_errors(garbage, gt, np.ones_like(valid))["mpjpe_current"] > 1000


def test_order_invariant_matching_swaps_reversed_prediction():
    gt = _hand(np.random.default_rng(4), 1)
    pred = gt[:, ::-1].copy()  # played backwards: past <-> future
    out = M.blurhand_errors(pred, gt, np.ones((1, T, J)))
    assert out["mpjpe_past"] == pytest.approx(0, abs=1e-9)
    assert out["mpjpe_future"] == pytest.approx(0, abs=1e-9)


def test_swapping_predicted_past_and_future_gives_same_errors():
    pred, gt, valid, *_ = _random_case(5, 40)
    valid[:2] = 1  # every frame has valid joints (else the NaN rule is order-dependent by design)
    a = M.blurhand_errors(pred, gt, valid)
    b = M.blurhand_errors(pred[:, ::-1], gt, valid)
    assert a == pytest.approx(b, nan_ok=True)


def test_nan_rule_frame_without_valid_joints_takes_the_swapped_order():
    gt = _hand(np.random.default_rng(6), 1)
    gt[0, 2] = gt[0, 0] + 0.05  # future far from past
    pred = gt.copy()  # perfect in the kept order
    pred[0, 0] = _offset(gt[0], 2, 5, 12.0)[2]  # predicted past = GT future with 12 mm at joint 5
    valid = np.ones((1, T, J))
    valid[0, 0] = 0  # no valid past joint: err_pf and err_fp are NaN, 'fp' wins
    out = M.blurhand_errors(pred, gt, valid)
    assert math.isnan(out["mpjpe_past"])
    assert out["mpjpe_future"] == pytest.approx(12 / 21)  # predicted past against GT future, not 0
    assert out["mpjpe_current"] == pytest.approx(0, abs=1e-9)


def test_tie_keeps_the_predicted_order():
    gt = _hand(np.random.default_rng(7), 1)
    gt[0, 2] = gt[0, 0]  # same GT past and future: both orders have the same summed error
    pred = gt.copy()
    pred[0, 0, 3, 0] += 0.010
    pred[0, 2, 5, 0] += 0.020
    out = M.blurhand_errors(pred, gt, np.ones((1, T, J)))
    assert out["mpjpe_past"] == pytest.approx(10 / 21)  # 'pf' kept on ties (err_pf <= err_fp)
    assert out["mpjpe_future"] == pytest.approx(20 / 21)


def test_mpvpe_hand_computed_and_mesh_valid():
    gt_verts = np.zeros((2, 4, 3))
    pred_verts = np.zeros((2, 4, 3))
    pred_verts[0, 0, 1] = 0.008  # sample 0: one of 4 vertices 8 mm off -> 2 mm
    pred_verts[1] = 1.0  # sample 1: no MANO ground truth
    gt = _hand(np.random.default_rng(8), 2)
    out = M.blurhand_errors(gt, gt, np.ones((2, T, J)), pred_verts, gt_verts, mesh_valid=np.array([1.0, 0.0]))
    assert out["mpvpe"] == pytest.approx(2.0)


def test_matches_loop_reference_on_random_data():
    pred, gt, valid, pred_verts, gt_verts, mesh_valid = _random_case(9, 60)
    ours = M.blurhand_errors(pred, gt, valid, pred_verts, gt_verts, mesh_valid)
    ref = _reference(pred, gt, valid, pred_verts, gt_verts, mesh_valid)
    assert ours == pytest.approx(ref, rel=1e-10)


def test_torch_float32_and_numpy_agree():
    pred, gt, valid, pred_verts, gt_verts, mesh_valid = _random_case(10, 20)
    a = M.blurhand_errors(pred, gt, valid, pred_verts, gt_verts, mesh_valid)
    args = [torch.tensor(x, dtype=torch.float32) for x in (pred, gt, valid, pred_verts, gt_verts, mesh_valid)]
    assert M.blurhand_errors(*args) == pytest.approx(a, rel=1e-4)


def test_accumulator_equals_one_shot():
    pred, gt, valid, pred_verts, gt_verts, mesh_valid = _random_case(11, 37)
    acc = M.BlurHandAccumulator()
    for lo, hi in ((0, 5), (5, 6), (6, 30), (30, 37)):
        acc.update(pred[lo:hi], gt[lo:hi], valid[lo:hi], pred_verts[lo:hi], gt_verts[lo:hi], mesh_valid[lo:hi])
    assert acc.num_samples == 37
    assert acc.compute() == pytest.approx(M.blurhand_errors(pred, gt, valid, pred_verts, gt_verts, mesh_valid))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            (np.zeros((2, T, 20, 3)), np.zeros((2, T, J, 3)), np.ones((2, T, J))),
            r"pred_joints: expected shape \(N, 3, 21, 3\)",
        ),
        (
            (np.zeros((2, T, J, 3)), np.zeros((3, T, J, 3)), np.ones((2, T, J))),
            r"gt_joints: expected shape \(N=2, 3, 21, 3\)",
        ),
        (
            (np.zeros((2, T, J, 3)), np.zeros((2, T, J, 3)), np.ones((2, J))),
            r"joint_valid: expected shape \(N=2, 3, 21\)",
        ),
    ],
)
def test_shape_errors_name_argument_and_shape(args, message):
    with pytest.raises(ValueError, match=message):
        M.blurhand_errors(*args)


def test_vertex_argument_errors():
    z, v = np.zeros((2, T, J, 3)), np.ones((2, T, J))
    with pytest.raises(ValueError, match=r"gt_verts: expected shape \(N=2, V=5, 3\)"):
        M.blurhand_errors(z, z, v, np.zeros((2, 5, 3)), np.zeros((2, 6, 3)))
    with pytest.raises(ValueError, match="pred_verts and gt_verts"):
        M.blurhand_errors(z, z, v, np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match=r"preds: expected shape \(N, K, 3, 21, 3\)"):
        M.mean_of_k(z)


# ---------------------------------------------------------------- multiple hypotheses


def test_best_of_k_never_mixes_hypotheses_across_frames():
    gt = _hand(np.random.default_rng(12), 1)
    gt[0, 2] = gt[0, 0] + 0.05  # far apart: no swap helps
    a = _offset(gt[0], 2, 4, 20.0)  # A: perfect past, future 20 mm at one joint, current 6 mm
    a = _offset(a, 1, 8, 6.0)
    b = _offset(gt[0], 0, 4, 15.0)  # B: past 15 mm at one joint, perfect future, current 9 mm
    b = _offset(b, 1, 8, 9.0)
    pred = np.stack([a, b])[None]  # (1, 2, T, J, 3)
    out = M.best_of_k(pred, gt, np.ones((1, T, J)))
    assert out["mpjpe_past"] == pytest.approx(15 / 21)  # B as a whole (15 + 0 < 0 + 20)
    assert out["mpjpe_future"] == pytest.approx(0, abs=1e-9)
    assert out["mpjpe_current"] == pytest.approx(6 / 21)  # A is best on current
    per_frame_oracle_past = 0.0  # A's past, B's future: lower, and not what we report
    assert out["mpjpe_past"] > per_frame_oracle_past + 0.5


def test_best_of_k_mpvpe_follows_current_choice():
    gt = _hand(np.random.default_rng(13), 1)
    pred = np.stack([_offset(gt[0], 1, 3, 5.0), _offset(gt[0], 1, 3, 1.0)])[None]
    gt_verts = np.zeros((1, 2, 3))
    pred_verts = np.zeros((1, 2, 2, 3))
    pred_verts[0, 0, :, 0] = 0.001  # hypothesis 0: 1 mm mesh, but worse joints
    pred_verts[0, 1, :, 0] = 0.004  # hypothesis 1: best current joints, 4 mm mesh
    out = M.best_of_k(pred, gt, np.ones((1, T, J)), pred_verts, gt_verts)
    assert out["mpvpe"] == pytest.approx(4.0)


def test_best_of_k_matches_loop_reference():
    pred, gt, valid, pred_verts, gt_verts, mesh_valid = _random_case(14, 25, k=5)
    cur, ends = _reference_best_of_k(pred, gt, valid)
    rows = np.arange(len(pred))
    chosen = pred[rows, ends].copy()
    chosen[:, 1] = pred[rows, cur, 1]
    ref = _reference(chosen, gt, valid, pred_verts[rows, cur], gt_verts, mesh_valid)
    assert M.best_of_k(pred, gt, valid, pred_verts, gt_verts, mesh_valid) == pytest.approx(ref, rel=1e-10)


def test_best_of_k_with_one_hypothesis_is_the_single_protocol():
    pred, gt, valid, pred_verts, gt_verts, mesh_valid = _random_case(15, 10, k=1)
    single = M.blurhand_errors(pred[:, 0], gt, valid, pred_verts[:, 0], gt_verts, mesh_valid)
    assert M.best_of_k(pred, gt, valid, pred_verts, gt_verts, mesh_valid) == pytest.approx(single)


def test_aggregate_aligns_reversed_hypothesis_before_averaging():
    rng = np.random.default_rng(16)
    h = _hand(rng, 1)[0]
    pred = np.stack([h, h[::-1], h + 0.01])[None]  # hypothesis 1 is hypothesis 0 played backwards
    verts = rng.normal(size=(1, 3, T, 7, 3))
    verts[0, 1] = verts[0, 0, ::-1]
    out = M.aggregate(pred, np.array([[0.9, 0.8, 0.1]]), top_n=2, verts=verts)
    np.testing.assert_allclose(out.joints[0], h, atol=1e-12)  # unaligned averaging would blend past and future
    np.testing.assert_allclose(out.verts[0], verts[0, 0], atol=1e-12)
    np.testing.assert_array_equal(out.indices, [[0, 1]])
    np.testing.assert_array_equal(out.swapped, [[False, True]])
    top1_reversed = M.aggregate(pred, np.array([[0.1, 0.8, 0.2]]), top_n=2)
    np.testing.assert_allclose(top1_reversed.joints[0, 0], (h[2] + h[2] + 0.01) / 2, atol=1e-12)


def test_aggregate_top_n_average_and_current_verts():
    rng = np.random.default_rng(17)
    pred = rng.normal(scale=0.01, size=(2, 4, T, J, 3))
    pred[:, :, 2] = pred[:, :, 0]  # past == future: no swap matters
    verts = rng.normal(size=(2, 4, 9, 3))
    scores = np.array([[0.1, 0.7, 0.3, 0.9], [0.5, 0.4, 0.6, 0.0]])
    out = M.aggregate(pred, scores, top_n=2, verts=verts)
    np.testing.assert_allclose(out.joints[0], pred[0, [3, 1]].mean(0))
    np.testing.assert_allclose(out.joints[1], pred[1, [2, 0]].mean(0))
    np.testing.assert_allclose(out.verts[1], verts[1, [2, 0]].mean(0))
    t = M.aggregate(torch.tensor(pred), torch.tensor(scores), top_n=2, verts=torch.tensor(verts))
    assert isinstance(t.joints, torch.Tensor)
    np.testing.assert_allclose(t.joints.numpy(), out.joints)
    with pytest.raises(ValueError, match="top_n"):
        M.aggregate(pred, scores, top_n=5)
    with pytest.raises(ValueError, match="scores: expected finite"):
        M.aggregate(pred, np.where(scores > 0.5, np.nan, scores), top_n=2)


def test_mean_of_k_aligns_to_hypothesis_zero_and_random_n_is_seeded():
    h = _hand(np.random.default_rng(18), 1)[0]
    pred = np.stack([h, h[::-1], h[::-1], h])[None]
    np.testing.assert_allclose(M.mean_of_k(pred).joints[0], h, atol=1e-12)
    pred2 = np.repeat(pred, 5, axis=0)
    a = M.random_n(pred2, 3, np.random.default_rng(1))
    b = M.random_n(pred2, 3, np.random.default_rng(1))
    np.testing.assert_array_equal(a.indices, b.indices)
    assert all(len(set(row)) == 3 for row in a.indices.tolist())
    assert len({tuple(row) for row in a.indices.tolist()}) > 1
    for joints, first in zip(a.joints, a.indices[:, 0], strict=True):  # aligned to the first drawn
        np.testing.assert_allclose(joints, h if first in (0, 3) else h[::-1], atol=1e-12)


def test_align_past_future():
    h = _hand(np.random.default_rng(19), 2)
    preds = np.stack([h, h[:, ::-1]], axis=1)  # (2, 2, T, J, 3)
    aligned, swapped = M.align_past_future(preds, h)
    np.testing.assert_array_equal(swapped, [[False, True], [False, True]])
    np.testing.assert_allclose(aligned[:, 1], h)


def _past_and_future_decide_together() -> tuple[np.ndarray, np.ndarray]:
    """``(reference (T, J, 3), hypothesis (T, J, 3))``, wrist at the origin: the hypothesis' past alone fits the
    reference's past worse than its future does (11 vs 10 cm), yet past and future together fit best in order
    (11 + 0 vs 10 + 21 cm), so the hypothesis must keep its order."""
    reference = np.zeros((T, J, 3))
    reference[2, 1:, 0] = 0.10  # future: the fingers 10 cm along x; past: all at the wrist
    hypothesis = reference.copy()
    hypothesis[0, 1:, 0] = -0.11  # its past 11 cm the other way; its future is the reference's
    return reference, hypothesis


def test_alignment_decides_on_past_and_future_together():
    reference, hypothesis = _past_and_future_decide_together()
    aligned, swapped = M.align_past_future(hypothesis[None, None], reference[None])
    np.testing.assert_array_equal(swapped, [[False]])
    np.testing.assert_array_equal(aligned[0, 0], hypothesis)
    out = M.aggregate(np.stack([reference, hypothesis])[None], np.array([[0.9, 0.5]]), top_n=2)
    np.testing.assert_array_equal(out.swapped, [[False, False]])
    np.testing.assert_allclose(out.joints[0], (reference + hypothesis) / 2, atol=1e-12)


def test_alignment_compares_wrist_relative_joints():
    """Absolute joints: each hypothesis frame is the reference's hand, moved to the other frame's wrist position
    (1 m away). Wrist-relative, the hands match in order; in absolute coordinates the exchanged order is nearer."""
    rng = np.random.default_rng(23)
    reference = rng.normal(scale=0.04, size=(T, J, 3))
    reference[:, 0] = 0.0
    wrists = np.array([[0.0, 0.0, 0.5], [0.5, 0.0, 0.5], [1.0, 0.0, 0.5]])  # (T, 3) the wrist's path
    hypothesis = reference + wrists[::-1, None]  # each frame's hand at the mirrored frame's wrist
    reference = reference + wrists[:, None]
    aligned, swapped = M.align_past_future(hypothesis[None, None], reference[None])
    np.testing.assert_array_equal(swapped, [[False]])
    out = M.aggregate(np.stack([reference, hypothesis])[None], np.array([[0.9, 0.5]]), top_n=2)
    np.testing.assert_array_equal(out.swapped, [[False, False]])
    np.testing.assert_allclose(out.joints[0], (reference + hypothesis) / 2, atol=1e-12)


def test_sequence_errors_hand_computed_and_types():
    gt = _hand(np.random.default_rng(20), 1)
    gt[0, 2] = gt[0, 0] + 0.05
    good = _offset(gt[0], 1, 2, 21.0)  # current 1 mm mean, past/future exact
    backwards = gt[0, ::-1].copy()  # exact once matched
    pred = np.stack([good, backwards])[None]
    valid = np.ones((1, T, J))
    np.testing.assert_allclose(M.sequence_errors(pred, gt, valid), [[1 / 3, 0]], atol=1e-9)
    valid[0, 1] = 0  # current frame unlabeled: mean over the two labeled frames
    np.testing.assert_allclose(M.sequence_errors(pred, gt, valid), [[0, 0]], atol=1e-9)
    none = M.sequence_errors(torch.tensor(pred, dtype=torch.float32), torch.tensor(gt), torch.zeros(1, T, J))
    assert isinstance(none, torch.Tensor) and none.dtype == torch.float32 and torch.isnan(none).all()


def test_sequence_errors_match_loop_reference():
    pred, gt, valid, *_ = _random_case(21, 8, k=3)
    ours = M.sequence_errors(pred, gt, valid)
    for i in range(8):
        for k in range(3):
            one = _reference(pred[i : i + 1, k], gt[i : i + 1], valid[i : i + 1])
            frames = [one[m] for m in ("mpjpe_past", "mpjpe_current", "mpjpe_future") if not math.isnan(one[m])]
            assert ours[i, k] == pytest.approx(sum(frames) / len(frames), rel=1e-10)


def test_selection_precision_hand_computed():
    scores = np.array([[0.9, 0.8, 0.1, 0.2], [0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.5, 0.5]])
    seq_err = np.array([[1.0, 5.0, 2.0, 9.0], [4.0, 3.0, 2.0, 1.0], [np.nan] * 4])
    assert M.selection_precision(scores, seq_err, top_n=2) == pytest.approx((0.5 + 1.0) / 2)
    assert M.selection_precision(scores[:2], seq_err[:2], top_n=3) == pytest.approx((2 / 3 + 1) / 2)


def _batches(n: int, size: int):
    return [slice(lo, min(lo + size, n)) for lo in range(0, n, size)]


def test_evaluator_matches_one_shot_reductions_and_reference():
    pred, gt, valid, pred_verts, gt_verts, mesh_valid = _random_case(22, 30, k=4)
    scores = np.random.default_rng(0).random((30, 4))
    ev = E.MultiHypothesisEvaluator(top_n=2, seed=3)
    for s in _batches(30, 7):
        ev.update(pred[s], gt[s], valid[s], pred_verts[s], gt_verts[s], mesh_valid[s], scores=scores[s])
    got = ev.compute()
    stats = {f"selection/{s}" for s in E.SELECTION_STATS}
    assert set(got) == {f"{r}/{m}" for r in E.REDUCTIONS for m in M.METRICS} | stats

    def check(prefix, expected):
        assert {m: got[f"{prefix}/{m}"] for m in M.METRICS} == pytest.approx(expected, rel=1e-10)

    check("best_of_k", M.best_of_k(pred, gt, valid, pred_verts, gt_verts, mesh_valid))
    check("hyp0", _reference(pred[:, 0], gt, valid, pred_verts[:, 0], gt_verts, mesh_valid))
    final = M.aggregate(pred, scores, 2, pred_verts)
    check("final", _reference(final.joints, gt, valid, final.verts, gt_verts, mesh_valid))
    mean = M.mean_of_k(pred, pred_verts)
    check("mean_of_k", _reference(mean.joints, gt, valid, mean.verts, gt_verts, mesh_valid))
    rnd = M.random_n(pred, 2, np.random.default_rng(3), pred_verts)  # same stream, drawn in one go
    check("random_n", _reference(rnd.joints, gt, valid, rnd.verts, gt_verts, mesh_valid))
    precision = M.selection_precision(scores, M.sequence_errors(pred, gt, valid), 2)
    assert got["selection/precision"] == pytest.approx(precision)


def test_evaluator_without_scores_and_torch_inputs():
    pred, gt, valid, *_ = _random_case(23, 6, k=3)
    ev = E.MultiHypothesisEvaluator(top_n=2)
    ev.update(torch.tensor(pred, dtype=torch.float32), torch.tensor(gt), torch.tensor(valid))
    got = ev.compute()
    assert not any(key.startswith(("final/", "selection/")) for key in got)
    assert math.isnan(got["hyp0/mpvpe"])
    assert got["hyp0/mpjpe_current"] == pytest.approx(M.blurhand_errors(pred[:, 0], gt, valid)["mpjpe_current"])
    with pytest.raises(ValueError, match="scores"):
        ev.update(pred, gt, valid, scores=np.zeros((6, 3)))
    with pytest.raises(ValueError, match="top_n"):
        E.MultiHypothesisEvaluator(top_n=4).update(pred, gt, valid)


def test_top_n_equal_to_k_has_a_final_without_scores_the_mean_of_k():
    """Keeping every hypothesis needs no selector: ``final`` is the mean of K, and no selection statistics."""
    pred, gt, valid, *_ = _random_case(29, 5, k=3)
    ev = E.MultiHypothesisEvaluator(top_n=3)
    ev.update(pred, gt, valid)
    got = ev.compute()
    assert got["final/mpjpe_current"] == got["mean_of_k/mpjpe_current"]
    assert not any(key.startswith("selection/") for key in got)


def test_oracle_scores_give_full_precision_and_beat_hyp0():
    pred, gt, valid, *_ = _random_case(24, 50, k=8)
    ev = E.MultiHypothesisEvaluator(top_n=2)
    oracle_scores = -M.sequence_errors(pred, gt, valid)
    ev.update(pred, gt, valid, scores=np.nan_to_num(oracle_scores, nan=0.0))
    got = ev.compute()
    assert got["selection/precision"] == pytest.approx(1.0)
    assert got["final/mpjpe_current"] < got["hyp0/mpjpe_current"]
    assert got["best_of_k/mpjpe_current"] < got["hyp0/mpjpe_current"]
    assert got["best_of_k/mpjpe_past"] < got["hyp0/mpjpe_past"]


def test_label_oracle_is_the_top_n_by_sequence_error():
    pred, gt, valid, pred_verts, gt_verts, mesh_valid = _random_case(25, 40, k=6)
    scores = np.random.default_rng(1).random((40, 6))
    ev = E.MultiHypothesisEvaluator(top_n=3)
    for s in _batches(40, 9):
        ev.update(pred[s], gt[s], valid[s], pred_verts[s], gt_verts[s], mesh_valid[s], scores=scores[s])
    got = ev.compute()
    seq_err = M.sequence_errors(pred, gt, valid)
    oracle = M.aggregate(pred, -np.nan_to_num(seq_err, nan=1e9), 3, pred_verts)
    expected = _reference(oracle.joints, gt, valid, oracle.verts, gt_verts, mesh_valid)
    assert {m: got[f"label_oracle/{m}"] for m in M.METRICS} == pytest.approx(expected, rel=1e-10)
    gain = (got["random_n/mpjpe_current"] - got["final/mpjpe_current"]) / (
        got["random_n/mpjpe_current"] - got["label_oracle/mpjpe_current"])
    assert got["selection/gain"] == pytest.approx(gain)
    assert got["label_oracle/mpjpe_current"] < got["random_n/mpjpe_current"]


def test_selection_gain_is_one_for_the_labels_and_near_zero_for_random():
    pred, gt, valid, *_ = _random_case(26, 400, k=8, p_invalid=0.0)
    seq_err = M.sequence_errors(pred, gt, valid)
    perfect = E.MultiHypothesisEvaluator(top_n=2)
    perfect.update(pred, gt, valid, scores=-seq_err)
    got = perfect.compute()
    assert got["selection/gain"] == pytest.approx(1.0) and got["selection/precision"] == pytest.approx(1.0)
    assert got["selection/common_set_share"] < 0.2  # the best pair differs from image to image
    worst = E.MultiHypothesisEvaluator(top_n=2)
    worst.update(pred, gt, valid, scores=seq_err)
    assert worst.compute()["selection/gain"] < 0


def test_a_constant_slot_rule_is_reported_as_one():
    """The demo's failure: the same rewards on every image pick the same set; spread 0, share 100%, a warning."""
    pred, gt, valid, *_ = _random_case(27, 64, k=4)
    constant = np.tile([0.9, 0.8, 0.1, 0.7], (64, 1))
    ev = E.MultiHypothesisEvaluator(top_n=3)
    for s in _batches(64, 10):
        ev.update(pred[s], gt[s], valid[s], scores=constant[s])
    got = ev.compute()
    assert got["selection/common_set_share"] == 1.0
    assert got["selection/reward_spread"] == pytest.approx(0.0, abs=1e-12)
    assert "constant rule (the same top-n set on 100% of the images)" in selection_verdict(got)
    assert "WARNING" in metric_table(got) and "label oracle top-n" in metric_table(got)


def test_reward_spread_is_the_mean_over_slots_of_the_std_across_images():
    stats = E.SelectionStats()
    scores = torch.tensor([[0.1, 0.5], [0.3, 0.5], [0.5, 0.5], [0.7, 0.5]], dtype=torch.float64)
    stats.update(scores[:3], torch.tensor([[1], [1], [1]]))
    stats.update(scores[3:], torch.tensor([[0]]))
    got = stats.compute()
    assert got["reward_spread"] == pytest.approx(np.std([0.1, 0.3, 0.5, 0.7]) / 2)
    assert got["common_set_share"] == 0.75


def test_selection_gain_without_headroom_is_nan_and_verdict_needs_a_problem():
    assert math.isnan(E.selection_gain(10.0, 9.0, 10.0))
    assert math.isnan(E.selection_gain(10.0, 9.0, 12.0))  # a label oracle worse than random: no headroom either
    assert E.selection_gain(10.0, 8.0, 6.0) == pytest.approx(0.5)
    assert selection_verdict({"selection/gain": 0.4, "selection/common_set_share": 0.3}) is None
    assert "gain is -0.20" in selection_verdict({"selection/gain": -0.2, "selection/common_set_share": 0.3})
    assert selection_verdict({}) is None


def test_reward_ranks_invert_the_top_n_order_with_ties_in_index_order():
    np.testing.assert_array_equal(M.reward_ranks(np.array([0.2, 0.5, 0.5, 0.1])), [2, 0, 1, 3])
    scores = torch.tensor([[0.2, 0.5, 0.5, 0.1]])
    assert M.top_n_by_reward(scores, 4)[0].tolist() == np.argsort(M.reward_ranks(scores[0].numpy())).tolist()
