"""A procedurally built, deterministic hand in MANO's file format (778 vertices, 1538 faces, MANO's skeleton).

Users without the official ``MANO_RIGHT.pkl`` still get a model that ``smplx.MANO`` loads unchanged.

Topology: one disk-like surface whose only boundary is a 16-vertex wrist opening (so F = 2V - 2 - 16 = 1538):
wrist ring (16) -> transition band -> 8 palm rings of 32 -> four 8-vertex finger tubes (the top palm ring splits
into four 8-loops joined by web triangles) with 14 rings each -> one-vertex fan caps; the thumb grows from the
6-vertex hole left by removing one palm vertex on the radial, palmar side (a 6-vertex tube of 9 rings + cap).
Frame as MANO's right hand: wrist near (0.095, 0.006, 0.006) m, fingers towards -x, thumb towards +z, palm -y.
Joints are centroids of vertex rings, so ``J_regressor`` is convex and exact. Vertex ids are permuted so that the
fingertips sit at 745 (thumb), 317 (index), 445 (middle), 556 (ring), 673 (pinky). The vertex order is fixed: do
not change the construction without bumping ``VERSION`` (tip ids and cached files depend on it).
"""

from __future__ import annotations

import numpy as np

VERSION = 1
FINGER_RINGS = 14  # rings per long finger (8 vertices each)
THUMB_RINGS = 9  # rings of the thumb tube (6 vertices each)
PALM_RINGS = 8
WRIST = np.array([0.095, 0.006, 0.006])
TIP_IDS = (745, 317, 445, 556, 673)  # thumb, index, middle, ring, pinky
# long fingers, radial (thumb side, +z) to ulnar: lateral centre (m), length MCP->tip (m), MANO joint ids
_FINGERS = {
    "index": (0.027, 0.072, (1, 2, 3)),
    "middle": (0.009, 0.078, (4, 5, 6)),
    "ring": (-0.009, 0.073, (10, 11, 12)),
    "pinky": (-0.027, 0.058, (7, 8, 9)),
}
_THUMB_JOINTS = (13, 14, 15)
_SEGMENTS = (0.45, 0.30, 0.25)  # phalanx length fractions
KINTREE_PARENTS = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14])


class _Mesh:
    def __init__(self) -> None:
        self.verts: list[np.ndarray] = []
        self.faces: list[tuple[int, int, int]] = []

    def add(self, points: np.ndarray) -> np.ndarray:
        start = len(self.verts)
        self.verts.extend(np.atleast_2d(points))
        return np.arange(start, len(self.verts))

    def band(self, a: np.ndarray, b: np.ndarray) -> None:
        """Triangulate between two closed rings of equal length."""
        n = len(a)
        for i in range(n):
            j = (i + 1) % n
            self.faces += [(a[i], b[i], a[j]), (a[j], b[i], b[j])]

    def fan(self, ring: np.ndarray, apex: int) -> None:
        n = len(ring)
        self.faces += [(ring[i], ring[(i + 1) % n], apex) for i in range(n)]


def _to_mano(u: np.ndarray, w: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Hand-local (u along the hand from the wrist, w lateral towards the thumb, y dorsal) -> MANO frame."""
    return np.stack([WRIST[0] - u, WRIST[1] + y, WRIST[2] + w], axis=-1)


def _ring(center_u: float, center_w: float, center_y: float, half_w: float, half_y: float, n: int,
          phase: float = 0.5) -> np.ndarray:
    angles = 2 * np.pi * (np.arange(n) + phase) / n
    return _to_mano(np.full(n, center_u), center_w + half_w * np.cos(angles), center_y + half_y * np.sin(angles))


def _orient_consistently(faces: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Flip faces so shared edges run in opposite directions, then make normals point outwards."""
    faces = faces.copy()
    edge_faces: dict[tuple[int, int], list[int]] = {}
    for fi, f in enumerate(faces):
        for k in range(3):
            a, b = int(f[k]), int(f[(k + 1) % 3])
            edge_faces.setdefault((min(a, b), max(a, b)), []).append(fi)
    done = np.zeros(len(faces), bool)
    done[0] = True
    stack = [0]
    while stack:
        fi = stack.pop()
        f = faces[fi]
        for k in range(3):
            a, b = int(f[k]), int(f[(k + 1) % 3])
            for fj in edge_faces[(min(a, b), max(a, b))]:
                if done[fj]:
                    continue
                g = list(faces[fj])
                if any(g[m] == a and g[(m + 1) % 3] == b for m in range(3)):
                    faces[fj] = faces[fj][::-1]
                done[fj] = True
                stack.append(fj)
    v = verts[faces]  # (F, 3, 3)
    signed_volume = np.einsum("fi,fi->f", v[:, 0] - WRIST, np.cross(v[:, 1] - WRIST, v[:, 2] - WRIST)).sum()
    return faces if signed_volume > 0 else faces[:, ::-1].copy()


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _pose_prior(rng: np.random.Generator, n: int) -> np.ndarray:
    """Samples of 15 finger joints' axis-angle (MANO order, right hand): correlated curl, MCP spread, thumb."""
    poses = np.zeros((n, 15, 3))
    curl_all = rng.uniform(-0.2, 1.0, size=(n, 1))
    for base in (0, 3, 9, 6):  # index, middle, ring, pinky (MANO joint ids 1-12 minus one)
        curl = 0.6 * curl_all + 0.4 * rng.uniform(-0.2, 1.4, size=(n, 1))
        for j in range(3):
            poses[:, base + j, 2] = curl[:, 0] * (1.0, 1.2, 0.8)[j] + 0.08 * rng.normal(size=n)
        poses[:, base, 1] = 0.15 * rng.normal(size=n)  # MCP abduction
    opposition = rng.uniform(-0.3, 1.0, size=n)
    poses[:, 12] = np.stack([0.6 * opposition, -0.2 * opposition, 0.3 * opposition], -1)
    poses[:, 13, 1] = -0.5 * opposition + 0.1 * rng.normal(size=n)
    poses[:, 14, 1] = -0.4 * opposition + 0.1 * rng.normal(size=n)
    return poses.reshape(n, 45)


def build_right(seed: int = 0) -> dict[str, np.ndarray]:
    """The right hand as MANO arrays (see module docstring)."""
    rng = np.random.default_rng(seed)
    mesh = _Mesh()
    palm_u = np.linspace(0.012, 0.085, PALM_RINGS)
    half_w = np.linspace(0.034, 0.044, PALM_RINGS)
    half_y = np.linspace(0.016, 0.013, PALM_RINGS)
    wrist_ring = mesh.add(_ring(0.0, 0.0, 0.0, 0.028, 0.016, 16))
    palm = [mesh.add(_ring(u, 0.0, 0.0, hw, hy, 32)) for u, hw, hy in zip(palm_u, half_w, half_y, strict=True)]
    for i in range(16):  # transition band 16 -> 32
        a, b = wrist_ring[i], wrist_ring[(i + 1) % 16]
        p0, p1, p2 = palm[0][2 * i], palm[0][2 * i + 1], palm[0][(2 * i + 2) % 32]
        mesh.faces += [(a, p0, p1), (a, p1, b), (b, p1, p2)]
    for r in range(PALM_RINGS - 1):
        mesh.band(palm[r], palm[r + 1])
    top = palm[-1]
    # Split the top ring (dorsal j=0..15 from +w to -w, palmar j'=31-j) into four 8-loops.
    joint_rings: dict[int, np.ndarray] = {0: wrist_ring}
    tips: dict[str, int] = {}
    finger_vertices: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    order = list(_FINGERS)
    for k, name in enumerate(order):
        center_w, length, joint_ids = _FINGERS[name]
        dorsal = [top[4 * k + m] for m in range(4)]
        palmar = [top[31 - (4 * k + 3 - m)] for m in range(4)]
        loop = np.array(dorsal + palmar)
        base_u = palm_u[-1]
        radius = 0.0085 if name != "pinky" else 0.0075
        rings = [loop]
        axial = np.linspace(0.0, length, FINGER_RINGS + 1)[1:]
        for s in axial:
            taper = 1.0 - 0.25 * s / length
            rings.append(mesh.add(_ring(base_u + s, center_w, 0.0, radius * taper, radius * taper * 0.9, 8, 0.5)))
        for r in range(len(rings) - 1):
            mesh.band(rings[r], rings[r + 1])
        tip = int(mesh.add(_to_mano(np.array([base_u + length + 0.006]), np.array([center_w]), np.array([0.0])))[0])
        mesh.fan(rings[-1], tip)
        tips[name] = tip
        joint_rings[joint_ids[0]] = loop
        bounds = np.cumsum(_SEGMENTS)[:2] * length
        for joint, s in zip(joint_ids[1:], bounds, strict=True):
            joint_rings[joint] = rings[1 + int(np.argmin(np.abs(axial - s)))]
        finger_vertices[name] = (np.concatenate(rings[1:] + [np.array([tip])]), np.array([base_u, center_w, length]))
    for k in range(3):  # web triangles between neighbouring fingers
        d0, d1 = top[4 * k + 3], top[4 * k + 4]
        p1, p0 = top[31 - (4 * k + 4)], top[31 - (4 * k + 3)]
        mesh.faces += [(d0, d1, p1), (d0, p1, p0)]
    # Thumb: remove a radial palmar vertex of palm ring 2 and grow a 6-vertex tube from its hole.
    hole_vertex = int(palm[2][30])
    incident = [f for f in mesh.faces if hole_vertex in f]
    mesh.faces = [f for f in mesh.faces if hole_vertex not in f]
    nxt = {}
    for f in incident:
        others = [v for v in f if v != hole_vertex]
        nxt[others[0]] = others[1] if f[(f.index(hole_vertex) + 1) % 3] == others[0] else others[0]
    hole = [next(iter(nxt))]
    edges = [tuple(v for v in f if v != hole_vertex) for f in incident]
    while len(hole) < len(edges):
        last = hole[-1]
        for a, b in edges:
            cand = b if a == last else a if b == last else None
            if cand is not None and cand not in hole:
                hole.append(cand)
                break
    hole = np.array(hole)
    verts = np.array(mesh.verts)
    hole_center = verts[hole].mean(0)
    thumb_dir = np.array([-0.55, -0.35, 0.76])
    thumb_dir /= np.linalg.norm(thumb_dir)
    thumb_len = 0.085
    side = np.cross(thumb_dir, [0.0, 1.0, 0.0])
    side /= np.linalg.norm(side)
    up = np.cross(side, thumb_dir)
    rel = verts[hole] - hole_center
    hole_angles = np.arctan2(rel @ up, rel @ side)
    thumb_rings = [hole]
    thumb_axial = np.linspace(0.0, thumb_len, THUMB_RINGS + 1)[1:]
    for s in thumb_axial:
        radius = 0.0115 * (1.0 - 0.3 * s / thumb_len)
        center = hole_center + thumb_dir * s
        ring = center + radius * (np.cos(hole_angles)[:, None] * side + np.sin(hole_angles)[:, None] * up)
        thumb_rings.append(mesh.add(ring))
    for r in range(len(thumb_rings) - 1):
        mesh.band(thumb_rings[r], thumb_rings[r + 1])
    thumb_tip = int(mesh.add(hole_center + thumb_dir * (thumb_len + 0.006))[0])
    mesh.fan(thumb_rings[-1], thumb_tip)
    tips["thumb"] = thumb_tip
    joint_rings[13] = hole
    for joint, frac in zip(_THUMB_JOINTS[1:], (0.40, 0.72), strict=True):
        joint_rings[joint] = thumb_rings[1 + int(np.argmin(np.abs(thumb_axial - frac * thumb_len)))]

    # Drop the removed vertex and renumber so the tips land on their ids.
    verts = np.array(mesh.verts)
    faces = np.array(mesh.faces, dtype=np.int64)
    keep = np.setdiff1d(np.arange(len(verts)), [hole_vertex])
    tip_old = [tips[n] for n in ("thumb", "index", "middle", "ring", "pinky")]
    rest = [v for v in keep if v not in tip_old]
    new_of_old = np.full(len(verts), -1)
    free = iter([i for i in range(len(keep)) if i not in TIP_IDS])
    for v in rest:
        new_of_old[v] = next(free)
    for v, new in zip(tip_old, TIP_IDS, strict=True):
        new_of_old[v] = new
    v_template = np.zeros((len(keep), 3))
    v_template[new_of_old[keep]] = verts[keep]
    faces = new_of_old[faces]
    faces = _orient_consistently(faces, v_template)
    joint_rings = {j: new_of_old[r] for j, r in joint_rings.items()}
    finger_vertices = {n: (new_of_old[v], meta) for n, (v, meta) in finger_vertices.items()}
    thumb_vertices = new_of_old[np.concatenate(thumb_rings[1:] + [np.array([thumb_tip])])]

    num_v = len(v_template)
    j_regressor = np.zeros((16, num_v))
    for joint, ring in joint_rings.items():
        j_regressor[joint, ring] = 1.0 / len(ring)
    joints = j_regressor @ v_template
    weights = _skinning_weights(v_template, joints, finger_vertices, thumb_vertices)
    return {
        "v_template": v_template,
        "f": faces.astype(np.uint32),
        "J_regressor": j_regressor,
        "weights": weights,
        "kintree_table": np.stack([np.where(KINTREE_PARENTS < 0, 4294967295, KINTREE_PARENTS), np.arange(16)]),
        "shapedirs": _shapedirs(v_template, rng),
        "posedirs": np.zeros((num_v, 3, 135)),
        **_pose_pca(rng),
    }


def _chain_weights(
    pos: np.ndarray, chain: tuple[int, ...], joints: np.ndarray, parent: int, blend: float
) -> np.ndarray:
    """Weights (len(pos), 16) blending along a chain of joints by the projection on each bone."""
    w = np.zeros((len(pos), 16))
    current = np.ones(len(pos))  # share not yet given to a bone closer to the wrist
    owners = [parent, *chain]
    for idx, joint in enumerate(chain):
        bone_end = chain[idx + 1] if idx + 1 < len(chain) else None
        axis = joints[bone_end] - joints[joint] if bone_end is not None else joints[joint] - joints[chain[idx - 1]]
        axis = axis / np.linalg.norm(axis)
        t = _smoothstep(((pos - joints[joint]) @ axis) / blend + 0.5)
        w[:, owners[idx]] += current * (1 - t)
        current = current * t
    w[:, owners[-1]] += current
    return w / w.sum(1, keepdims=True)


def _skinning_weights(verts: np.ndarray, joints: np.ndarray, fingers: dict, thumb_vertices: np.ndarray) -> np.ndarray:
    weights = np.zeros((len(verts), 16))
    weights[:, 0] = 1.0
    for name, (ids, _meta) in fingers.items():
        chain = _FINGERS[name][2]
        weights[ids] = _chain_weights(verts[ids], chain, joints, 0, blend=0.008)
    weights[thumb_vertices] = _chain_weights(verts[thumb_vertices], _THUMB_JOINTS, joints, 0, blend=0.012)
    return weights


def _shapedirs(verts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(V, 3, 10): size, finger length, palm width, thickness, palm length, then smooth random fields."""
    centered = verts - WRIST
    dirs = np.zeros((len(verts), 3, 10))
    dirs[:, :, 0] = 0.06 * centered
    along = np.clip(-centered[:, 0] - 0.085, 0.0, None)  # distance past the knuckles
    dirs[:, 0, 1] = -0.15 * along
    dirs[:, 2, 2] = 0.08 * centered[:, 2]
    dirs[:, 1, 3] = 0.12 * (centered[:, 1] - 0.0)
    dirs[:, 0, 4] = -0.06 * np.clip(-centered[:, 0], 0.0, 0.085)
    for c in range(5, 10):
        freq = rng.normal(scale=25.0, size=(3, 3))
        phase = rng.uniform(0, 2 * np.pi, size=3)
        dirs[:, :, c] = 0.0015 * np.sin(centered @ freq + phase)
    return dirs


def _pose_pca(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """hands_mean (45,) and hands_components (45, 45): rows are principal directions scaled by their std."""
    samples = _pose_prior(rng, 20000)
    mean = samples.mean(0)
    _, sing, vt = np.linalg.svd(samples - mean, full_matrices=False)
    std = sing / np.sqrt(len(samples) - 1)
    return {"hands_mean": mean, "hands_components": vt * np.maximum(std, 1e-3)[:, None]}


def mirror(model: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Left hand from a right hand: negate x, reverse face winding, mirror pose-space arrays."""
    flip = np.array([-1.0, 1.0, 1.0])
    pose_sign = np.tile([1.0, -1.0, -1.0], 15)
    pose_feature_sign = np.tile(np.outer(flip, flip).reshape(9), 15)
    out = dict(model)
    out["v_template"] = model["v_template"] * flip
    out["shapedirs"] = model["shapedirs"] * flip[None, :, None]
    out["posedirs"] = model["posedirs"] * flip[None, :, None] * pose_feature_sign[None, None, :]
    out["f"] = model["f"][:, ::-1].copy()
    out["hands_mean"] = model["hands_mean"] * pose_sign
    out["hands_components"] = model["hands_components"] * pose_sign[None, :]
    return out
