"""A procedurally built, deterministic hand in MANO's file format (778 vertices, 1538 faces, MANO's skeleton).

Users without the official ``MANO_RIGHT.pkl`` still get a model that ``smplx.MANO`` loads unchanged.

Topology: one disk-like surface whose only boundary is a 16-vertex wrist opening (so F = 2V - 2 - 16 = 1538):
wrist ring (16) -> transition band -> 9 palm rings of 32 -> the last palm ring splits into four 8-vertex loops
joined by web quads -> 8-vertex finger tubes -> 2-vertex ridge caps. The thumb grows from an 8-vertex hole left
by removing three quads on the radial (+z) edge of the palm. Frame as MANO's right hand: wrist near
(0.096, 0.006, 0.006) m, fingers towards -x, thumb towards +z, palm facing -y. Joints are placed on an
anatomical skeleton; ``J_regressor`` reproduces them as convex vertex combinations (:mod:`hmh.mano.rig`).
Vertex ids are permuted so that the fingertips sit at 745 (thumb), 317 (index), 445 (middle), 556 (ring) and
673 (pinky), and vertices next to them at 744/320/444/443/554/671 (smplx and manopth conventions). The vertex order
is part of the format: change the construction only together with ``VERSION`` (cached files depend on it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hmh.mano import rig as mano_rig

VERSION = 2
NUM_VERTS = 778
# Skeleton of the right hand (m): per chain the three MANO joints then the fingertip. Close to MANO's template.
WRIST = np.array([0.0957, 0.0064, 0.0062])
CHAINS: dict[str, np.ndarray] = {
    "index": np.array([[0.0076, 0.0012, 0.0269], [-0.0251, 0.0052, 0.0291], [-0.0473, 0.0039, 0.0288],
                       [-0.0705, 0.0025, 0.0285]]),
    "middle": np.array([[0.0016, 0.0014, 0.0026], [-0.0311, 0.0027, 0.0019], [-0.0553, 0.0026, -0.0017],
                        [-0.0800, 0.0015, -0.0050]]),
    "pinky": np.array([[0.0218, -0.0032, -0.0387], [0.0020, -0.0027, -0.0482], [-0.0143, -0.0035, -0.0553],
                       [-0.0335, -0.0045, -0.0625]]),
    "ring": np.array([[0.0114, 0.0001, -0.0197], [-0.0186, 0.0009, -0.0237], [-0.0434, 0.0019, -0.0279],
                      [-0.0665, 0.0010, -0.0320]]),
    "thumb": np.array([[0.0690, -0.0050, 0.0300], [0.0480, -0.0110, 0.0550], [0.0330, -0.0140, 0.0740],
                       [0.0140, -0.0170, 0.0930]]),
}  # MANO joint order: wrist, index1-3, middle1-3, pinky1-3, ring1-3, thumb1-3
FINGERS = ("pinky", "ring", "middle", "index")  # palm columns from the ulnar (-z) to the radial (+z) side
RADII = {"index": (0.0092, 0.0072), "middle": (0.0095, 0.0074), "ring": (0.0088, 0.0069),
         "pinky": (0.0077, 0.0061), "thumb": (0.0112, 0.0084)}  # finger half-width at base and tip (m)
RINGS = {"index": 11, "middle": 12, "ring": 11, "pinky": 10, "thumb": 14}  # 8-vertex rings per finger
PALM_RINGS = 9
THUMB_HOLE_RINGS = (1, 4)  # palm rings bounding the thumb hole
SPLIT = 0.012  # the palm splits into fingers this far beyond the MCP joints (m)
TIP_IDS = {"thumb": (745, 744), "index": (317, 320), "middle": (445, 444, 443), "ring": (556, 554),
           "pinky": (673, 671)}  # (tip, other cap vertex, a last-ring vertex)
KINTREE_PARENTS = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14])


@dataclass
class HandMesh:
    """The right-hand surface in construction order, before vertex ids are permuted."""

    verts: np.ndarray  # (V, 3)
    faces: np.ndarray  # (F, 3) consistently wound, normals outwards
    region: np.ndarray  # (V,) 0 palm, else 1 + index in mano_rig.REGIONS
    caps: dict[str, tuple[int, int, int]]  # finger -> (tip vertex, other cap vertex, dorsal last-ring vertex)


def joints16() -> np.ndarray:
    """``(16, 3)`` skeleton joints in MANO order."""
    chains = [CHAINS[name][:3] for name in ("index", "middle", "pinky", "ring", "thumb")]
    return np.concatenate([WRIST[None], *chains])


class _Builder:
    def __init__(self) -> None:
        self.verts: list[np.ndarray] = []
        self.region: list[int] = []
        self.faces: list[tuple[int, int, int]] = []
        self.caps: dict[str, tuple[int, int, int]] = {}

    def add(self, points: np.ndarray, region: int) -> np.ndarray:
        points = np.atleast_2d(points)
        start = len(self.verts)
        self.verts.extend(points)
        self.region.extend([region] * len(points))
        return np.arange(start, len(self.verts))

    def band(self, a: np.ndarray, b: np.ndarray, skip: tuple[int, ...] = ()) -> None:
        """Triangulate between two closed rings of equal length (quad ``i`` joins a[i], a[i+1], b[i+1], b[i])."""
        n = len(a)
        for i in range(n):
            if i not in skip:
                j = (i + 1) % n
                self.quad(a[i], a[j], b[j], b[i])

    def quad(self, a: int, b: int, c: int, d: int) -> None:
        self.faces += [(a, b, c), (a, c, d)]


def _frame(direction: np.ndarray, up_hint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lateral and dorsal unit vectors orthogonal to ``direction``."""
    up = up_hint - (up_hint @ direction) * direction
    up /= np.linalg.norm(up)
    return np.cross(up, direction), up


def _ellipse(center, direction, up_hint, half_w, half_h, angles) -> np.ndarray:
    lat, up = _frame(direction, up_hint)
    return center + half_w * np.cos(angles)[:, None] * lat + half_h * np.sin(angles)[:, None] * up


def _polyline(points: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    """Point and smoothed unit tangent at arc length ``s`` along a polyline."""
    seg = np.diff(points, axis=0)
    length = np.linalg.norm(seg, axis=1)
    dirs = seg / length[:, None]
    ends = np.cumsum(length)
    i = min(int(np.searchsorted(ends, s)), len(seg) - 1)
    start = ends[i] - length[i]
    point = points[i] + dirs[i] * (s - start)
    tangent = dirs[i].copy()
    blend = 0.004  # tangents turn smoothly within 4 mm of a joint
    if i > 0 and s - start < blend:
        tangent += dirs[i - 1] * (1 - (s - start) / blend)
    if i + 1 < len(seg) and ends[i] - s < blend:
        tangent += dirs[i + 1] * (1 - (ends[i] - s) / blend)
    return point, tangent / np.linalg.norm(tangent)


def _finger_tube(b: _Builder, name: str, base: np.ndarray, centre_line: np.ndarray, up_hint: np.ndarray) -> None:
    """Rings of 8 along ``centre_line`` (starting at the centre of the loop ``base``) to a ridge cap at the tip.

    The first rings morph from the loop's own shape to an elliptic cross-section; the radius tapers, swells
    slightly at the knuckles and rounds off at the tip.
    """
    verts = np.array(b.verts)
    start_dir = _polyline(centre_line, 0.0)[1]
    lat, up = _frame(start_dir, up_hint)
    rel = verts[base] - centre_line[0]
    base_offsets = rel - np.outer(rel @ start_dir, start_dir)  # (8, 3) the loop's shape around the axis
    base_angles = np.unwrap(np.arctan2(rel @ up, rel @ lat))
    sense = np.sign(base_angles[1] - base_angles[0])  # finger loops turn clockwise (-1) seen from the tip
    region = 1 + mano_rig.REGIONS.index(name)
    r_base, r_tip = RADII[name]
    total = float(np.linalg.norm(np.diff(centre_line, axis=0), axis=1).sum())
    joints_s = np.cumsum(np.linalg.norm(np.diff(centre_line, axis=0), axis=1))[:-1]
    n_rings = RINGS[name]
    end = total - 0.3 * r_tip
    rings = [base]
    for i in range(1, n_rings + 1):
        s = end * (i / n_rings) ** 0.93  # slightly denser towards the tip
        centre, direction = _polyline(centre_line, s)
        radius = r_base + (r_tip - r_base) * s / total
        radius *= 1.0 + 0.07 * np.exp(-(((s - joints_s[:, None]) / 0.004) ** 2)).sum()
        round_from = total - r_tip
        if s > round_from:
            radius *= np.sqrt(max(1.0 - ((s - round_from) / r_tip) ** 2, 0.0))
        morph = _smoothstep(s / 0.014)
        even = base_angles[0] + sense * (np.arange(8) * np.pi / 4 - np.pi / 8 * i / n_rings)
        tube = _ellipse(centre, direction, up_hint, radius, 0.85 * radius, base_angles + (even - base_angles) * morph)
        loop = centre + base_offsets
        rings.append(b.add(loop + (tube - loop) * morph, region))
    for ring_a, ring_b in zip(rings[:-1], rings[1:], strict=True):
        b.band(ring_a, ring_b)
    tip, direction = _polyline(centre_line, total)
    ring = rings[-1]
    ring_pts = np.array(b.verts)[ring]
    towards = ring_pts[2] - ring_pts[6]  # the cap's ridge runs across the ring (vertex 2 side to vertex 6 side)
    towards /= np.linalg.norm(towards)
    cap_a = b.add(tip + 0.2 * r_tip * towards, region)[0]
    cap_b = b.add(tip - 0.15 * r_tip * direction - 0.35 * r_tip * towards, region)[0]
    b.faces += [(ring[k], ring[k + 1], cap_a) for k in range(4)]
    b.faces += [(ring[k], ring[(k + 1) % 8], cap_b) for k in range(4, 8)]
    b.faces += [(ring[4], cap_b, cap_a), (ring[0], cap_a, cap_b)]
    b.caps[name] = (int(cap_a), int(cap_b), int(ring[2]))


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3 - 2 * x)


def _superellipse(angle: np.ndarray, half_w: float, top: float, bottom: float, power: float = 3.0) -> np.ndarray:
    """(z, y) offsets on a rounded-box cross-section."""
    c, s = np.cos(angle), np.sin(angle)
    z = half_w * np.sign(c) * np.abs(c) ** (2 / power)
    y = np.where(s > 0, top, bottom) * np.sign(s) * np.abs(s) ** (2 / power)
    return np.stack([z, y], axis=-1)


def _ring_angles(n: int) -> np.ndarray:
    """Ring index -> angle around the axis: the dorsal half from the ulnar side, then the palmar half back."""
    return np.pi - np.pi / n - np.arange(n) * 2 * np.pi / n


def _split_ring() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Positions (32, 3) of the last palm ring and each finger's loop (8 palm ring indices)."""
    points = np.zeros((32, 3))
    loops = {}
    for g, name in enumerate(FINGERS):
        mcp, pip = CHAINS[name][0], CHAINS[name][1]
        direction = (pip - mcp) / np.linalg.norm(pip - mcp)
        centre = mcp + SPLIT * direction
        radius = RADII[name][0] * 1.03
        ring = _ellipse(centre, direction, np.array([0.0, 1.0, 0.0]), radius, 0.85 * radius, _ring_angles(8))
        loop = np.array([4 * g, 4 * g + 1, 4 * g + 2, 4 * g + 3, 31 - (4 * g + 3), 31 - (4 * g + 2),
                         31 - (4 * g + 1), 31 - 4 * g])
        points[loop] = ring
        loops[name] = loop
    return points, loops


def _palm(b: _Builder) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """Wrist ring, transition band, palm rings (with the thumb hole left open) and web quads."""
    wrist_centre = np.array([0.104, 0.0050, 0.0040])
    zy = _superellipse(_ring_angles(16), 0.028, 0.016, 0.019, power=2.4)
    wrist = b.add(np.column_stack([np.full(16, wrist_centre[0]), wrist_centre[1] + zy[:, 1],
                                   wrist_centre[2] + zy[:, 0]]), 0)
    split, loops = _split_ring()
    rings = []
    for k in range(PALM_RINGS):
        t = k / (PALM_RINGS - 1)
        smooth = _smoothstep(t)
        half_w = 0.031 + 0.016 * smooth
        top = 0.0145 - 0.0035 * t
        bottom = 0.0185 - 0.0065 * t
        thenar = 1.0 + 0.25 * np.exp(-(((t - 0.3) / 0.25) ** 2))  # bulge of the palm's thumb side
        zy = _superellipse(_ring_angles(32), half_w, top, bottom)
        zy[:, 1] = np.where((zy[:, 1] < 0) & (zy[:, 0] > 0), zy[:, 1] * thenar, zy[:, 1])
        centre_z = 0.0045 - 0.0115 * smooth
        centre_y = 0.0045 - 0.0045 * t
        x = 0.0905 + (split[:, 0] - 0.0905) * t
        ellipse = np.column_stack([x, centre_y + zy[:, 1], centre_z + zy[:, 0]])
        weight = t**3
        rings.append(b.add(ellipse + (split - ellipse) * weight, 0))
    for i in range(16):  # transition band 16 -> 32
        w0, w1 = wrist[i], wrist[(i + 1) % 16]
        p0, p1, p2 = rings[0][2 * i], rings[0][2 * i + 1], rings[0][(2 * i + 2) % 32]
        b.faces += [(w0, p0, p1), (w0, p1, w1), (w1, p1, p2)]
    first, last = THUMB_HOLE_RINGS
    for k in range(PALM_RINGS - 1):
        b.band(rings[k], rings[k + 1], skip=(15,) if first <= k < last else ())
    top = rings[-1]
    for g in range(3):  # web quads between neighbouring fingers
        b.quad(top[4 * g + 3], top[4 * g + 4], top[31 - (4 * g + 4)], top[31 - (4 * g + 3)])
    return rings, {name: top[loop] for name, loop in loops.items()}


def _thumb(b: _Builder, palm_rings: list[np.ndarray]) -> None:
    first, last = THUMB_HOLE_RINGS
    hole = np.array([palm_rings[k][15] for k in range(first, last + 1)]
                    + [palm_rings[k][16] for k in range(last, first - 1, -1)])
    verts = np.array(b.verts)
    centre = verts[hole].mean(axis=0)
    centre_line = np.concatenate([centre[None], CHAINS["thumb"][1:]])
    _finger_tube(b, "thumb", hole, centre_line, np.array([0.0, 1.0, 0.6]))


def build_mesh() -> HandMesh:
    """The right-hand surface (construction order)."""
    b = _Builder()
    palm_rings, loops = _palm(b)
    verts = np.array(b.verts)
    for name in ("index", "middle", "ring", "pinky"):
        centre_line = np.concatenate([verts[loops[name]].mean(axis=0)[None], CHAINS[name][1:]])
        _finger_tube(b, name, loops[name], centre_line, np.array([0.0, 1.0, 0.0]))
    _thumb(b, palm_rings)
    verts = np.array(b.verts)
    faces = _orient_outwards(np.array(b.faces, dtype=np.int64), verts)
    return HandMesh(verts=verts, faces=faces, region=np.array(b.region), caps=b.caps)


def _orient_outwards(faces: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Flip faces so every shared edge runs both ways (one orientation), then make normals point outwards."""
    faces = faces.copy()
    edge_faces: dict[tuple[int, int], list[int]] = {}
    for fi, face in enumerate(faces):
        for k in range(3):
            a, c = int(face[k]), int(face[(k + 1) % 3])
            edge_faces.setdefault((min(a, c), max(a, c)), []).append(fi)
    done = np.zeros(len(faces), dtype=bool)
    done[0] = True
    stack = [0]
    while stack:
        fi = stack.pop()
        face = faces[fi]
        for k in range(3):
            a, c = int(face[k]), int(face[(k + 1) % 3])
            for fj in edge_faces[(min(a, c), max(a, c))]:
                if not done[fj]:
                    other = list(faces[fj])
                    if any(other[m] == a and other[(m + 1) % 3] == c for m in range(3)):
                        faces[fj] = faces[fj][::-1]
                    done[fj] = True
                    stack.append(fj)
    tri = verts[faces] - WRIST  # (F, 3, 3)
    signed_volume = np.einsum("fi,fi->f", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum()
    return faces if signed_volume > 0 else faces[:, ::-1].copy()


def _permutation(mesh: HandMesh) -> np.ndarray:
    """``new_id[old_id]``: caps to their conventional ids, every other vertex keeps construction order."""
    fixed = {}
    for name, ids in TIP_IDS.items():
        fixed.update(zip(mesh.caps[name], ids, strict=False))
    free = iter(sorted(set(range(len(mesh.verts))) - set(fixed.values())))
    return np.array([fixed[v] if v in fixed else next(free) for v in range(len(mesh.verts))])


def build_right(seed: int = 0) -> dict[str, np.ndarray]:
    """The right hand as MANO arrays (see the module docstring); ``seed`` drives shape fields and the pose prior."""
    mesh = build_mesh()
    if len(mesh.verts) != NUM_VERTS:
        raise RuntimeError(f"synthetic hand has {len(mesh.verts)} vertices, expected {NUM_VERTS}")
    new_id = _permutation(mesh)
    order = np.argsort(new_id)  # old id of each new id
    verts = mesh.verts[order]
    region = mesh.region[order]
    faces = new_id[mesh.faces]
    rng = np.random.default_rng(seed)
    joints = joints16()
    tips = np.array([verts[TIP_IDS[name][0]] for name in mano_rig.REGIONS])
    weights = mano_rig.skinning_weights(verts, region, joints, tips)
    return {
        "v_template": verts,
        "f": faces.astype(np.uint32),
        "J_regressor": mano_rig.joint_regressor(verts, joints),
        "weights": weights,
        "kintree_table": np.stack([np.where(KINTREE_PARENTS < 0, 4294967295, KINTREE_PARENTS), np.arange(16)]),
        "shapedirs": mano_rig.shapedirs(verts, region, joints, tips, rng),
        "posedirs": mano_rig.posedirs(verts, faces, joints, weights),
        **mano_rig.pose_pca(joints, tips, rng),
    }


def mirror(model: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Left hand from a right hand: negate x, reverse the face winding, mirror the pose-space arrays.

    A rotation mirrors as ``M R M`` with ``M = diag(-1, 1, 1)``: axis-angle ``(x, y, z) -> (x, -y, -z)``, and each
    pose feature ``(R - I)[r, c]`` picks up the sign ``m[r] * m[c]``.
    """
    flip = np.array([-1.0, 1.0, 1.0])
    pose_sign = np.tile([1.0, -1.0, -1.0], 15)
    feature_sign = np.tile(np.outer(flip, flip).reshape(9), 15)
    out = dict(model)
    out["v_template"] = model["v_template"] * flip
    out["shapedirs"] = model["shapedirs"] * flip[None, :, None]
    out["posedirs"] = model["posedirs"] * flip[None, :, None] * feature_sign[None, None, :]
    out["f"] = model["f"][:, ::-1].copy()
    out["hands_mean"] = model["hands_mean"] * pose_sign
    out["hands_components"] = model["hands_components"] * pose_sign[None, :]
    return out
