"""Rigging of the synthetic hand (:mod:`hmh.mano.synthetic`): skinning weights, joint regressor, blend shapes and
the PCA hand-pose space, all from the template mesh ``verts (V, 3)`` and the skeleton ``joints (16, 3)`` (MANO order).

Regions label each vertex: 0 is the palm (with the wrist ring), ``1 + REGIONS.index(finger)`` a finger.
"""

from __future__ import annotations

import numpy as np

REGIONS = ("thumb", "index", "middle", "ring", "pinky")  # also the fingertip order
CHAIN_JOINTS = {"index": (1, 2, 3), "middle": (4, 5, 6), "pinky": (7, 8, 9), "ring": (10, 11, 12),
                "thumb": (13, 14, 15)}  # MANO joint ids of each finger, base to tip
PALMAR = {name: np.array([0.0, -1.0, 0.0]) for name in REGIONS} | {"thumb": np.array([0.0, -1.0, -0.9])}
SPREAD = {"index": 1.0, "middle": 0.0, "ring": -1.0, "pinky": -1.6, "thumb": 0.0}  # MCP abduction pattern


def _bones(joints: np.ndarray, tips: np.ndarray) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Per MANO joint the segments it drives: the wrist owns the metacarpals, a finger joint its phalanx."""
    bones: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(16)]
    for f, name in enumerate(REGIONS):
        chain = CHAIN_JOINTS[name]
        bones[0].append((joints[0], joints[chain[0]]))
        ends = [joints[chain[1]], joints[chain[2]], tips[f]]
        for joint, end in zip(chain, ends, strict=True):
            bones[joint].append((joints[joint], end))
    return bones


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip((points - a) @ ab / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(points - a - t[:, None] * ab, axis=1)


def skinning_weights(
    verts: np.ndarray, region: np.ndarray, joints: np.ndarray, tips: np.ndarray, sigma: float = 0.0045
) -> np.ndarray:
    """``(V, 16)`` weights: a Gaussian of the distance to each joint's bones, among the joints a region may use.

    Across a joint the two neighbouring bones are equally far, so weights blend smoothly over about ``sigma``.
    """
    bones = _bones(joints, tips)
    dist = np.stack([np.min([_segment_distance(verts, a, b) for a, b in segs], axis=0) for segs in bones], 1)
    allowed = np.zeros((len(REGIONS) + 1, 16), dtype=bool)
    allowed[:, 0] = True
    allowed[0, [CHAIN_JOINTS[name][0] for name in REGIONS]] = True  # the palm follows the proximal bones
    for f, name in enumerate(REGIONS):
        allowed[1 + f, list(CHAIN_JOINTS[name])] = True
    d2 = np.where(allowed[region], dist**2, np.inf)  # (V, 16)
    weights = np.exp(-(d2 - d2.min(axis=1, keepdims=True)) / sigma**2)
    weights[weights < 0.01] = 0.0
    return weights / weights.sum(axis=1, keepdims=True)


def joint_regressor(verts: np.ndarray, joints: np.ndarray, neighbours: int = 40) -> np.ndarray:
    """``(16, V)`` convex weights (non-negative, rows sum to 1) on nearby vertices that reproduce ``joints``.

    Non-negative least squares on the nearest vertices, with a weak pull towards equal weights so the joint
    depends on a patch of surface rather than on three or four vertices.
    """
    from scipy.optimize import nnls  # slow to import; only needed when building

    regressor = np.zeros((len(joints), len(verts)))
    for j, joint in enumerate(joints):
        near = np.argsort(np.linalg.norm(verts - joint, axis=1))[:neighbours]
        rel = (verts[near] - joint).T / 1e-3  # (3, K) millimetres
        system = np.concatenate([1e3 * rel, 1e3 * np.ones((1, neighbours)), 1e-2 * np.eye(neighbours)])
        target = np.concatenate([np.zeros(3), [1e3], np.full(neighbours, 1e-2 / neighbours)])
        w, _ = nnls(system, target, maxiter=50 * neighbours)
        w /= w.sum()
        error = np.linalg.norm(w @ verts[near] - joint)
        if error > 1e-6:
            raise RuntimeError(f"joint {j} at {joint} is outside its vertices' hull (error {error * 1e3:.3f} mm)")
        regressor[j, near] = w
    return regressor


def _vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = verts[faces]  # (F, 3, 3)
    face_normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # area-weighted
    normals = np.zeros_like(verts)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_normals)
    return normals / np.linalg.norm(normals, axis=1, keepdims=True)


def posedirs(verts: np.ndarray, faces: np.ndarray, joints: np.ndarray, weights: np.ndarray,
             bulge: float = 0.0018, radius: float = 0.007) -> np.ndarray:
    """``(V, 3, 135)`` pose correctives: a knuckle swells dorsally by ``bulge * (1 - cos angle)`` when it bends.

    ``1 - cos angle = -(trace(R) - 3) / 2``, linear in the diagonal pose features ``R[k, k] - 1``.
    """
    normals = _vertex_normals(verts, faces)
    out = np.zeros((len(verts), 3, 135))
    parents = {joint: (chain[i - 1] if i else 0) for chain in CHAIN_JOINTS.values() for i, joint in enumerate(chain)}
    for name, chain in CHAIN_JOINTS.items():
        dorsal = -PALMAR[name] / np.linalg.norm(PALMAR[name])
        for joint in chain:
            near = np.exp(-np.sum((verts - joints[joint]) ** 2, axis=1) / (2 * radius**2))
            moved = (weights[:, joint] + weights[:, parents[joint]]) > 0  # only the skin around this joint
            amount = bulge * near * np.clip(normals @ dorsal, 0.0, None) * moved  # (V,)
            for k in range(3):
                out[:, :, 9 * (joint - 1) + 4 * k] = -0.5 * amount[:, None] * normals
    return out


def shapedirs(verts: np.ndarray, region: np.ndarray, joints: np.ndarray, tips: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
    """``(V, 3, 10)``: size, finger length, palm width, thickness, palm length, then 5 smooth random fields.

    Fingers move rigidly with their base under the palm components, so the surface stays attached.
    """
    out = np.zeros((len(verts), 3, 10))
    wrist = joints[0]
    palm = region == 0
    out[:, :, 0] = 0.06 * (verts - wrist)
    centre_z = joints[[1, 4, 7, 10], 2].mean()
    base_of = np.zeros((len(verts), 3))  # where each vertex's palm components are evaluated
    base_of[palm] = verts[palm]
    for f, name in enumerate(REGIONS):
        ids = region == 1 + f
        base = joints[CHAIN_JOINTS[name][0]]
        axis = (tips[f] - base) / np.linalg.norm(tips[f] - base)
        rel = verts[ids] - base
        along = rel @ axis
        out[ids, :, 1] = 0.10 * np.outer(along, axis)
        out[ids, :, 3] = 0.12 * (rel - np.outer(along, axis))
        base_of[ids] = base
    out[:, 2, 2] = 0.08 * (base_of[:, 2] - centre_z)
    out[palm, 1, 3] = 0.12 * (verts[palm, 1] - joints[[1, 4, 7, 10], 1].mean())
    out[:, 0, 4] = 0.08 * (base_of[:, 0] - wrist[0])
    rel = verts - wrist
    for c in range(5, 10):
        freq = rng.normal(scale=20.0, size=(3, 3))
        phase = rng.uniform(0, 2 * np.pi, size=3)
        out[:, :, c] = 0.0015 * np.sin(rel @ freq + phase)
    return out


def _axes(joints: np.ndarray, tips: np.ndarray, name: str, f: int, k: int) -> tuple[np.ndarray, ...]:
    """Flexion, abduction and twist axes of the ``k``-th joint of a finger (rest frame = world frame)."""
    chain = CHAIN_JOINTS[name]
    end = joints[chain[k + 1]] if k < 2 else tips[f]
    along = (end - joints[chain[k]]) / np.linalg.norm(end - joints[chain[k]])
    palmar = PALMAR[name] / np.linalg.norm(PALMAR[name])
    flexion = np.cross(along, palmar)
    flexion /= np.linalg.norm(flexion)
    return flexion, np.cross(flexion, along), along


def pose_prior(joints: np.ndarray, tips: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, 45)`` hand poses (axis-angle, MANO joints 1-15): correlated curl, MCP spread, thumb opposition."""
    poses = np.zeros((n, 16, 3))
    curl = rng.normal(0.28, 0.3, size=n)  # a shared curl makes neighbouring fingers move together
    spread = rng.normal(0.0, 0.1, size=n)
    for f, name in enumerate(REGIONS):
        finger_curl = np.clip(curl + rng.normal(0.0, 0.2, size=n), -0.3, 1.6)
        scale = (0.6, 0.8, 0.9) if name == "thumb" else (1.0, 1.15, 0.75)
        for k, joint in enumerate(CHAIN_JOINTS[name]):
            flexion, abduction, along = _axes(joints, tips, name, f, k)
            angle = scale[k] * finger_curl + rng.normal(0.0, 0.06, size=n)
            side = rng.normal(0.0, 0.02, size=n)
            if k == 0:
                side = SPREAD[name] * spread + rng.normal(0.0, 0.15 if name == "thumb" else 0.05, size=n)
            twist = rng.normal(0.0, 0.04, size=n)
            poses[:, joint] = np.outer(angle, flexion) + np.outer(side, abduction) + np.outer(twist, along)
    poses = poses[:, 1:].reshape(n, 45)  # (n, 15 * 3)
    return poses + rng.normal(0.0, 0.01, size=poses.shape)


def pose_pca(joints: np.ndarray, tips: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``hands_mean (45,)`` and ``hands_components (45, 45)``: rows are principal directions times their std."""
    samples = pose_prior(joints, tips, rng, 20000)
    mean = samples.mean(axis=0)
    centred = samples - mean
    variance, vectors = np.linalg.eigh(centred.T @ centred / (len(samples) - 1))  # ascending
    order = np.argsort(variance)[::-1]
    vectors = vectors[:, order] * np.sign(vectors[np.abs(vectors[:, order]).argmax(axis=0), order])  # fixed sign
    return {"hands_mean": mean, "hands_components": vectors.T * np.sqrt(variance[order])[:, None]}
