"""BlurHand evaluation protocol (BlurHandNet's ``BlurHand.evaluate``) and multi-hypothesis reductions.

Protocol, reported in millimetres. Joints are MANO-21 (wrist = joint 0), frames ``(past, current, future)``:
- prediction and ground truth are made wrist-relative per frame; no Procrustes, no scale alignment;
- current MPJPE compares the middle frames. Past/future are matched per sample, order-invariantly:
  ``err_pf = mean_valid|pred_past - gt_past| + mean_valid|pred_future - gt_future|``, ``err_fp`` the same with the
  predicted past and future exchanged; the order is kept iff ``err_pf <= err_fp`` (ties keep it). A frame without
  valid joints makes both sums NaN, the comparison False, and the exchanged order wins, as in the official code;
- aggregation: errors are collected per joint over samples (valid joints only), averaged per joint, then averaged
  over the joints (those with at least one valid error: the official code fails on a joint that is never valid);
- MPVPE (current frame): mean over the vertices of a sample, then over the samples with ``mesh_valid``. Vertices
  are compared as given: pass the prediction minus its wrist joint and the GT mesh minus the GT MANO wrist.
A joint or mesh counts as valid where its validity value is non-zero. Errors are mirror-invariant, so mirrored
left hands need no un-mirroring.

Multi-hypothesis reductions of ``(N, K, T, J, 3)`` predictions: ``best_of_k`` (oracle: one whole hypothesis per
sample, never mixed across frames), ``aggregate`` (top-n by score, each past/future aligned to the top-1, averaged:
the final output), ``mean_of_k`` (all K aligned to hypothesis 0, averaged), ``random_n`` (n random hypotheses,
aligned to the first drawn, averaged) and hypothesis 0 alone (``hyp0``). :mod:`hmh.eval.protocol` streams them all
at once over batches, with the selection statistics; it builds on this module's tensor core (float64 CPU tensors
in, no input conversion): ``checked_tensor``/``checked_scores``/``checked_verts`` (shape checks naming the
argument), ``match_past_future`` -> ``Matched``, ``vertex_errors``, ``aggregate_indices``, ``add_best_of_k``,
``selection_hits`` and the two top-n rules ``top_n_by_reward`` / ``top_n_by_error``.

Inputs may be numpy arrays or torch tensors. Metrics (``blurhand_errors``, ``best_of_k``, the accumulators,
``selection_precision``) compute in float64 on the CPU. ``aggregate``, ``mean_of_k``, ``random_n``,
``align_past_future`` and ``sequence_errors`` return the input's kind: numpy stays numpy, tensors stay on their
device, computed in at least float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "CPU64",
    "METRICS",
    "NUM_FRAMES",
    "NUM_JOINTS",
    "Aggregate",
    "BlurHandAccumulator",
    "Matched",
    "add_best_of_k",
    "aggregate",
    "aggregate_indices",
    "align_past_future",
    "best_of_k",
    "blurhand_errors",
    "checked_scores",
    "checked_tensor",
    "checked_verts",
    "match_past_future",
    "mean_of_k",
    "random_n",
    "reward_ranks",
    "selection_hits",
    "selection_precision",
    "sequence_errors",
    "top_n_by_error",
    "top_n_by_reward",
    "vertex_errors",
]

NUM_FRAMES = 3
NUM_JOINTS = 21
WRIST = 0
PAST, CURRENT, FUTURE = 0, 1, 2
METRICS = ("mpjpe_past", "mpjpe_current", "mpjpe_future", "mpvpe")

ArrayLike = np.ndarray | torch.Tensor
Shape = tuple[int | str, ...]
CPU64 = (torch.device("cpu"), torch.float64)


def checked_tensor(x: ArrayLike, name: str, expected: Shape, dims: dict[str, int], device=None,
                   dtype=None) -> torch.Tensor:
    """``x`` as a tensor whose shape matches ``expected`` (ints, or letters bound in ``dims`` on first use).

    ``dtype`` torch.bool gives ``x != 0``; None promotes to at least float32. ``device`` None keeps the device.
    """
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    shape, bound = tuple(t.shape), dict(dims)
    ok = len(shape) == len(expected)
    for size, want in zip(shape, expected, strict=False):
        ok = ok and (bound.setdefault(want, size) if isinstance(want, str) else want) == size
    if not ok:
        want = ", ".join(f"{d}={dims[d]}" if d in dims else str(d) for d in expected)
        raise ValueError(f"{name}: expected shape ({want}), got {shape}")
    dims.update(bound)
    if dtype is torch.bool:
        return (t != 0).to(device=device)
    return t.to(device=device, dtype=dtype or torch.promote_types(t.dtype, torch.float32))


def checked_scores(scores: ArrayLike, top_n: int, dims: dict[str, int], device=None, dtype=None) -> torch.Tensor:
    """Checked finite ``scores (N, K)`` to pick ``1 <= top_n <= K`` hypotheses by."""
    s = checked_tensor(scores, "scores", ("N", "K"), dims, device, dtype)
    if not 1 <= top_n <= dims["K"]:
        raise ValueError(f"top_n: expected 1 <= top_n <= K={dims['K']}, got {top_n}")
    if not bool(torch.isfinite(s).all()):
        raise ValueError("scores: expected finite values")
    return s


def _wrist_relative(joints: torch.Tensor) -> torch.Tensor:
    """``(..., T, J, 3)`` minus each frame's wrist."""
    return joints - joints[..., WRIST : WRIST + 1, :]


def _swap_frames(x: torch.Tensor, swap: torch.Tensor) -> torch.Tensor:
    """``x (*L, T, ...)`` with past and future exchanged where ``swap (*L)`` is True (T = 3: a flip)."""
    mask = swap.reshape(swap.shape + (1,) * (x.dim() - swap.dim()))
    return torch.where(mask, x.flip(swap.dim()), x)


def _masked_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over the last axis of the valid entries; NaN where none is valid."""
    return torch.where(valid, x, 0).sum(-1) / valid.sum(-1)


@dataclass
class Matched:
    """Per-joint errors (mm) after the past/future matching: ``errors``/``valid (*L, T, J)``, ``swapped (*L)``."""

    errors: torch.Tensor
    valid: torch.Tensor
    swapped: torch.Tensor

    def frame_means(self) -> torch.Tensor:
        """``(*L, T)`` mean error over each frame's valid joints (NaN for a frame without any)."""
        return _masked_mean(self.errors, self.valid)

    def sequence(self) -> torch.Tensor:
        """``(*L)`` mean of ``frame_means`` over the frames that have valid joints (NaN if none has)."""
        return torch.nanmean(self.frame_means(), dim=-1)


def match_past_future(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> Matched:
    """Protocol errors of ``pred (*L, T, J, 3)`` against ``gt``/``valid`` broadcastable to it (metres in)."""
    pred, gt = _wrist_relative(pred), _wrist_relative(gt)
    direct = 1000 * torch.linalg.vector_norm(pred - gt, dim=-1)  # (*L, T, J)
    crossed = 1000 * torch.linalg.vector_norm(pred.flip(-3) - gt, dim=-1)  # predicted past <-> future
    valid = valid.expand(direct.shape)

    def pf_sum(err: torch.Tensor) -> torch.Tensor:
        return sum(_masked_mean(err[..., t, :], valid[..., t, :]) for t in (PAST, FUTURE))

    swapped = ~(pf_sum(direct) <= pf_sum(crossed))  # NaN compares False: exchanged order
    return Matched(torch.where(swapped[..., None, None], crossed, direct), valid, swapped)


def _reversed(joints: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``(*L)`` True where ``joints (*L, T, J, 3)`` fits ``reference`` better with past/future exchanged."""
    joints, reference = _wrist_relative(joints), _wrist_relative(reference)
    direct = torch.linalg.vector_norm(joints - reference, dim=-1).mean(-1)  # (*L, T)
    crossed = torch.linalg.vector_norm(joints.flip(-3) - reference, dim=-1).mean(-1)
    return ~(direct[..., PAST] + direct[..., FUTURE] <= crossed[..., PAST] + crossed[..., FUTURE])


def vertex_errors(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """``(*L)`` mean vertex error (mm) of ``pred (*L, V, 3)`` against ``gt`` broadcastable to it."""
    return 1000 * torch.linalg.vector_norm(pred - gt, dim=-1).mean(-1)


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x (N, K, ...)`` at hypothesis ``index (N,)`` -> ``(N, ...)``."""
    return x[torch.arange(x.shape[0], device=x.device), index]


def checked_verts(pred_verts, gt_verts, mesh_valid, lead: Shape, dims: dict[str, int]):
    """Checked CPU float64 ``(pred (*lead, V, 3), gt (N, V, 3), mesh_valid (N,) bool)``, or None without vertices."""
    if pred_verts is None and gt_verts is None:
        if mesh_valid is not None:
            raise ValueError("mesh_valid: given without pred_verts and gt_verts")
        return None
    if pred_verts is None or gt_verts is None:
        raise ValueError("pred_verts and gt_verts: give both or neither")
    pred = checked_tensor(pred_verts, "pred_verts", (*lead, "V", 3), dims, *CPU64)
    gt = checked_tensor(gt_verts, "gt_verts", ("N", "V", 3), dims, *CPU64)
    if mesh_valid is None:
        return pred, gt, torch.ones(dims["N"], dtype=torch.bool)
    return pred, gt, checked_tensor(mesh_valid, "mesh_valid", ("N",), dims, "cpu", torch.bool)


class BlurHandAccumulator:
    """Streaming BlurHand protocol: keeps per-(frame, joint) error sums and counts and the MPVPE sum, never the
    predictions. ``update`` batches, then ``compute``; the result equals ``blurhand_errors`` on the concatenation."""

    def __init__(self) -> None:
        self._joint_sum = torch.zeros(NUM_FRAMES, NUM_JOINTS, dtype=torch.float64)
        self._joint_count = torch.zeros(NUM_FRAMES, NUM_JOINTS, dtype=torch.int64)
        self._vert_sum = 0.0
        self._vert_count = 0
        self.num_samples = 0

    def update(self, pred_joints, gt_joints, joint_valid, pred_verts=None, gt_verts=None, mesh_valid=None) -> None:
        """Add a batch: ``pred_joints``/``gt_joints (B, T, J, 3)`` metres, ``joint_valid (B, T, J)``,
        optional ``pred_verts``/``gt_verts (B, V, 3)`` current frame, ``mesh_valid (B,)`` (default all valid)."""
        dims: dict[str, int] = {}
        pred = checked_tensor(pred_joints, "pred_joints", ("N", NUM_FRAMES, NUM_JOINTS, 3), dims, *CPU64)
        gt = checked_tensor(gt_joints, "gt_joints", ("N", NUM_FRAMES, NUM_JOINTS, 3), dims, *CPU64)
        valid = checked_tensor(joint_valid, "joint_valid", ("N", NUM_FRAMES, NUM_JOINTS), dims, "cpu", torch.bool)
        verts = checked_verts(pred_verts, gt_verts, mesh_valid, ("N",), dims)
        vert_err = None if verts is None else vertex_errors(verts[0], verts[1])
        self._add(match_past_future(pred, gt, valid), vert_err, None if verts is None else verts[2])

    def _add(self, matched: Matched, vert_err: torch.Tensor | None, mesh_valid: torch.Tensor | None) -> None:
        """Add protocol errors ``(B, T, J)`` and, if given, vertex errors ``(B,)`` with ``mesh_valid (B,)``."""
        self._joint_sum += torch.where(matched.valid, matched.errors, 0).sum(0)
        self._joint_count += matched.valid.sum(0)
        if vert_err is not None:
            self._vert_sum += float(vert_err[mesh_valid].sum())
            self._vert_count += int(mesh_valid.sum())
        self.num_samples += matched.errors.shape[0]

    def compute(self) -> dict[str, float]:
        """``{mpjpe_past, mpjpe_current, mpjpe_future, mpvpe}`` in mm; NaN where nothing valid was seen."""
        per_joint = self._joint_sum / self._joint_count  # (T, J), NaN for a joint never valid
        frames = torch.nanmean(per_joint, dim=1)  # (T,)
        mpvpe = self._vert_sum / self._vert_count if self._vert_count else float("nan")
        return {
            "mpjpe_past": float(frames[PAST]),
            "mpjpe_current": float(frames[CURRENT]),
            "mpjpe_future": float(frames[FUTURE]),
            "mpvpe": mpvpe,
        }


def blurhand_errors(pred_joints, gt_joints, joint_valid, pred_verts=None, gt_verts=None, mesh_valid=None):
    """BlurHand errors (mm) of one prediction per sample: ``pred_joints``/``gt_joints (N, T, J, 3)`` metres,
    ``joint_valid (N, T, J)``, optional current-frame ``pred_verts``/``gt_verts (N, V, 3)`` and ``mesh_valid (N,)``.

    Returns ``{mpjpe_past, mpjpe_current, mpjpe_future, mpvpe}`` (``mpvpe`` NaN without vertices)."""
    acc = BlurHandAccumulator()
    acc.update(pred_joints, gt_joints, joint_valid, pred_verts, gt_verts, mesh_valid)
    return acc.compute()


def add_best_of_k(acc: BlurHandAccumulator, matched: Matched, vert_err, mesh_valid) -> None:
    """Add the oracle errors of ``matched (N, K, T, J)`` to ``acc``: current from the hypothesis with the smallest
    current-frame error, past and future both from the one with the smallest matched past+future error; MPVPE
    ``vert_err (N, K)`` from the hypothesis chosen for current. Ties pick the lowest index."""
    means = matched.frame_means()  # (N, K, T)
    best_current = torch.nan_to_num(means[..., CURRENT], nan=torch.inf).argmin(1)  # (N,)
    best_ends = torch.nansum(means[..., [PAST, FUTURE]], dim=-1).argmin(1)  # (N,)
    errors = _take(matched.errors, best_ends).clone()  # (N, T, J)
    errors[:, CURRENT] = _take(matched.errors, best_current)[:, CURRENT]
    chosen = Matched(errors, matched.valid[:, 0], _take(matched.swapped, best_ends))
    acc._add(chosen, None if vert_err is None else _take(vert_err, best_current), mesh_valid)


def best_of_k(pred_joints, gt_joints, joint_valid, pred_verts=None, gt_verts=None, mesh_valid=None):
    """Oracle best-of-K errors (mm): ``pred_joints (N, K, T, J, 3)``, ``gt_joints (N, T, J, 3)``,
    ``joint_valid (N, T, J)``, optional ``pred_verts (N, K, V, 3)``, ``gt_verts (N, V, 3)``, ``mesh_valid (N,)``.

    Per sample, one whole hypothesis for current (smallest current-frame error, also used for MPVPE) and one whole
    hypothesis for past and future together (smallest order-invariant past+future error): frames are never mixed."""
    dims: dict[str, int] = {}
    pred = checked_tensor(pred_joints, "pred_joints", ("N", "K", NUM_FRAMES, NUM_JOINTS, 3), dims, *CPU64)
    gt = checked_tensor(gt_joints, "gt_joints", ("N", NUM_FRAMES, NUM_JOINTS, 3), dims, *CPU64)
    valid = checked_tensor(joint_valid, "joint_valid", ("N", NUM_FRAMES, NUM_JOINTS), dims, "cpu", torch.bool)
    verts = checked_verts(pred_verts, gt_verts, mesh_valid, ("N", "K"), dims)
    acc = BlurHandAccumulator()
    vert_err = None if verts is None else vertex_errors(verts[0], verts[1][:, None])  # (N, K)
    matched = match_past_future(pred, gt[:, None], valid[:, None])  # (N, K, T, J)
    add_best_of_k(acc, matched, vert_err, None if verts is None else verts[2])
    return acc.compute()


@dataclass
class Aggregate:
    """An averaged prediction: ``joints (N, T, J, 3)``, ``verts`` ``(N, V, 3)``/``(N, T, V, 3)`` or None,
    ``indices (N, n)`` the averaged hypotheses (best first), ``swapped (N, n)`` whose past/future were exchanged."""

    joints: ArrayLike
    verts: ArrayLike | None
    indices: ArrayLike
    swapped: ArrayLike


def top_n_by_reward(scores: torch.Tensor, top_n: int) -> torch.Tensor:
    """Indices ``(N, n)`` of the ``top_n`` highest ``scores (N, K)``, best first; equal scores keep the lower index
    first. The one rule of a selector's choice: the final output, the selection statistics, the pictures."""
    return torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :top_n]


def reward_ranks(scores: ArrayLike) -> np.ndarray:
    """``(K,)`` int64: each hypothesis' 0-based rank by its score in ``scores (K,)`` (0 = the highest), in the
    order of :func:`top_n_by_reward` (equal scores keep the lower index first)."""
    order = top_n_by_reward(torch.as_tensor(np.asarray(scores, dtype=np.float64))[None], len(scores))[0].numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def top_n_by_error(errors: torch.Tensor, top_n: int) -> torch.Tensor:
    """Indices ``(N, n)`` of the ``top_n`` lowest ``errors (N, K)``, best first; equal errors keep the lower index
    first, NaN ranks last. The one rule of the JRC labels, the label oracle and the selection precision."""
    return torch.sort(errors, dim=1, stable=True).indices[:, :top_n]


def aggregate_indices(preds: torch.Tensor, indices: torch.Tensor, verts: torch.Tensor | None) -> Aggregate:
    """Tensor core of ``aggregate``: the hypotheses ``indices (N, n)`` of ``preds``, best first."""
    rows = torch.arange(preds.shape[0], device=preds.device)[:, None]  # (N, 1)
    chosen = preds[rows, indices]  # (N, n, T, J, 3)
    swapped = _reversed(chosen, chosen[:, :1])  # (N, n)
    joints = _swap_frames(chosen, swapped).mean(1)  # (N, T, J, 3)
    if verts is not None:
        verts = verts[rows, indices]  # (N, n, V, 3) or (N, n, T, V, 3)
        verts = (_swap_frames(verts, swapped) if verts.dim() == 5 else verts).mean(1)
    return Aggregate(joints, verts, indices, swapped)


def aggregate(preds, scores, top_n: int, verts=None) -> Aggregate:
    """Final output: the ``top_n`` hypotheses of ``preds (N, K, T, J, 3)`` by ``scores (N, K)`` (higher is better),
    each one's past/future aligned to the top-1 (order-invariant matching on wrist-relative joints, ties keep the
    order), then averaged per frame. ``verts`` ``(N, K, V, 3)`` (current frame) or ``(N, K, T, V, 3)`` are averaged
    the same way. Returns the input's kind (see the module docstring)."""
    dims: dict[str, int] = {}
    p = checked_tensor(preds, "preds", ("N", "K", NUM_FRAMES, NUM_JOINTS, 3), dims)
    s = checked_scores(scores, top_n, dims, p.device, p.dtype)
    v = None
    if verts is not None:
        frames = (NUM_FRAMES,) if len(verts.shape) == 5 else ()
        v = checked_tensor(verts, "verts", ("N", "K", *frames, "V", 3), dims, p.device, p.dtype)
    out = aggregate_indices(p, top_n_by_reward(s, top_n), v)
    if isinstance(preds, torch.Tensor):
        return out
    return Aggregate(*(None if x is None else x.numpy() for x in (out.joints, out.verts, out.indices, out.swapped)))


def _lead(preds) -> tuple[int, int]:
    """``(N, K)`` of ``preds (N, K, T, J, 3)``; ValueError naming ``preds`` for another number of axes."""
    shape = tuple(preds.shape) if isinstance(preds, torch.Tensor) else np.shape(preds)
    if len(shape) != 5:
        raise ValueError(f"preds: expected shape (N, K, {NUM_FRAMES}, {NUM_JOINTS}, 3), got {shape}")
    return shape[0], shape[1]


def _like(scores: np.ndarray, preds) -> ArrayLike:
    """``scores`` as a tensor on ``preds``' device when ``preds`` is a tensor."""
    return torch.as_tensor(scores, device=preds.device) if isinstance(preds, torch.Tensor) else scores


def mean_of_k(preds, verts=None) -> Aggregate:
    """Selection-free baseline: all K hypotheses of ``preds (N, K, T, J, 3)``, past/future aligned to
    hypothesis 0, averaged (``verts`` as in ``aggregate``)."""
    n, k = _lead(preds)
    scores = np.tile(-np.arange(k, dtype=np.float64), (n, 1))  # (N, K): hypothesis 0 ranks first
    return aggregate(preds, _like(scores, preds), k, verts)


def random_n(preds, top_n: int, rng: np.random.Generator, verts=None) -> Aggregate:
    """Selection-free baseline: ``top_n`` hypotheses of ``preds (N, K, T, J, 3)`` drawn uniformly without
    replacement per sample, aligned to the first drawn, averaged (``verts`` as in ``aggregate``)."""
    return aggregate(preds, _like(rng.random(_lead(preds)), preds), top_n, verts)


def align_past_future(preds, reference):
    """``preds (N, K, T, J, 3)`` with past/future exchanged where that fits ``reference (N, T, J, 3)`` better.

    Returns ``(aligned (N, K, T, J, 3), swapped (N, K) bool)`` of the input's kind."""
    dims: dict[str, int] = {}
    p = checked_tensor(preds, "preds", ("N", "K", NUM_FRAMES, NUM_JOINTS, 3), dims)
    r = checked_tensor(reference, "reference", ("N", NUM_FRAMES, NUM_JOINTS, 3), dims, p.device, p.dtype)
    swapped = _reversed(p, r[:, None])  # (N, K)
    aligned = _swap_frames(p, swapped)
    if isinstance(preds, torch.Tensor):
        return aligned, swapped
    return aligned.numpy(), swapped.numpy()


def sequence_errors(pred, gt, valid):
    """Per-hypothesis sequence MPJPE (mm) ``(N, K)``: ``pred (N, K, T, J, 3)``, ``gt (N, T, J, 3)``,
    ``valid (N, T, J)``. Past/future matched as in the protocol, then the mean over the frames that have valid
    joints of each frame's mean error over its valid joints; NaN for a sample without any valid joint. Used for
    the JRC labels and ``selection_precision``. Returns the input's kind (tensors stay on their device)."""
    dims: dict[str, int] = {}
    p = checked_tensor(pred, "pred", ("N", "K", NUM_FRAMES, NUM_JOINTS, 3), dims)
    g = checked_tensor(gt, "gt", ("N", NUM_FRAMES, NUM_JOINTS, 3), dims, p.device, p.dtype)
    v = checked_tensor(valid, "valid", ("N", NUM_FRAMES, NUM_JOINTS), dims, p.device, torch.bool)
    errors = match_past_future(p, g[:, None], v[:, None]).sequence()  # (N, K)
    return errors if isinstance(pred, torch.Tensor) else errors.numpy()


def selection_hits(scores: torch.Tensor, seq_err: torch.Tensor, top_n: int) -> torch.Tensor:
    """``(N,)`` fraction of the top-n by score that are among the top-n by ``seq_err``; NaN where it has NaN."""
    chosen, best = top_n_by_reward(scores, top_n), top_n_by_error(seq_err, top_n)  # (N, n) each
    hits = (chosen[:, :, None] == best[:, None, :]).any(-1).double().mean(-1)  # (N,)
    return torch.where(torch.isnan(seq_err).any(1), torch.nan, hits)


def selection_precision(scores, seq_err, top_n: int) -> float:
    """Mean over samples (those with finite ``seq_err``) of |top-n by ``scores (N, K)`` (higher is better) ∩ top-n
    by ``seq_err (N, K)`` (lower is better)| / n; ties broken by the lower index. NaN without samples."""
    dims: dict[str, int] = {}
    s = checked_scores(scores, top_n, dims, *CPU64)
    e = checked_tensor(seq_err, "seq_err", ("N", "K"), dims, *CPU64)
    return float(torch.nanmean(selection_hits(s, e, top_n)))
