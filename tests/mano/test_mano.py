"""MANO layer: the synthetic hand, smplx compatibility, the 21-joint wrapper, index tables, the cache."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import smplx
import torch

from hmh.mano import model as mano

TIP_SLOTS = [4, 8, 12, 16, 20]  # thumb, index, middle, ring, pinky tips in MANO-21 order
MIRROR = torch.tensor([1.0, -1.0, -1.0])  # axis-angle of a mirrored rotation
FLIP_X = torch.tensor([-1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def right() -> dict[str, np.ndarray]:
    return mano.load_model_file(mano.model_path("", "right"))


@pytest.fixture(scope="module")
def layer(right) -> mano.Mano:
    return mano.Mano(right, side="right")


def _edges(faces: np.ndarray) -> Counter:
    return Counter((int(f[k]), int(f[(k + 1) % 3])) for f in faces for k in range(3))


def _closed(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Close the wrist opening with a fan around its centroid (same orientation as the surface)."""
    edges = _edges(faces)
    boundary = [(a, b) for (a, b) in edges if (b, a) not in edges]
    centre = len(verts)
    return np.vstack([verts, verts[[a for a, _ in boundary]].mean(0)]), np.vstack(
        [faces, [(b, a, centre) for a, b in boundary]]
    )


def _winding_number(verts: np.ndarray, faces: np.ndarray, point: np.ndarray) -> float:
    """Generalised winding number (Van Oosterom-Strackee solid angles): 1 inside a closed outward surface."""
    a, b, c = (verts[faces[:, k]] - point for k in range(3))
    la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
    num = np.einsum("ij,ij->i", a, np.cross(b, c))
    den = la * lb * lc + np.einsum("ij,ij->i", a, b) * lc + np.einsum("ij,ij->i", b, c) * la
    den += np.einsum("ij,ij->i", c, a) * lb
    return float(2 * np.arctan2(num, den).sum() / (4 * np.pi))


def test_synthetic_hand_is_one_consistently_wound_surface_with_a_16_vertex_wrist_opening(right) -> None:
    for key, shape in mano.EXPECTED_SHAPES.items():
        assert right[key].shape == shape, key
    faces = right["f"]
    directed = _edges(faces)
    assert max(directed.values()) == 1  # consistent winding: no edge is traversed twice in one direction
    boundary = [(a, b) for (a, b) in directed if (b, a) not in directed]
    assert len(boundary) == 16  # every other edge is shared by exactly two faces: edge-manifold
    successor = dict(boundary)
    loop, vertex = [], boundary[0][0]
    while vertex not in loop:
        loop.append(vertex)
        vertex = successor[vertex]
    assert len(loop) == 16  # a single wrist loop
    undirected = {tuple(sorted(e)) for e in directed}
    assert mano.NUM_VERTS - len(undirected) + len(faces) == 1  # Euler characteristic of a disk
    assert len(np.unique(faces)) == mano.NUM_VERTS
    closed_v, closed_f = _closed(right["v_template"], faces)
    tri = closed_v[closed_f]
    volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6
    assert 1.5e-4 < volume < 6e-4  # outward normals; a hand's volume is ~300-500 ml


def test_skeleton_joints_lie_inside_the_hand(right) -> None:
    closed_v, closed_f = _closed(right["v_template"], right["f"])
    joints = right["J_regressor"] @ right["v_template"]
    winding = [_winding_number(closed_v, closed_f, j) for j in joints]
    np.testing.assert_allclose(winding, 1.0, atol=1e-3)
    assert _winding_number(closed_v, closed_f, joints[0] + [0.0, 0.2, 0.0]) == pytest.approx(0.0, abs=1e-6)


def test_rig_arrays_are_sensible(right) -> None:
    weights, regressor = right["weights"], right["J_regressor"]
    assert weights.min() >= 0 and np.allclose(weights.sum(1), 1.0)
    assert regressor.min() >= 0 and np.allclose(regressor.sum(1), 1.0)  # convex: joints stay inside the hull
    joints = regressor @ right["v_template"]
    for j in range(16):
        used = right["v_template"][regressor[j] > 0]
        reach = np.linalg.norm(used - joints[j], axis=1).max()
        assert reach < (0.035 if j == 0 else 0.025), j  # a local patch of surface (the wrist is wide)
    for tip, joint in zip(mano.FINGERTIP_VERTEX_IDS, (15, 3, 6, 12, 9), strict=True):
        assert weights[tip, joint] > 0.99  # a fingertip follows its distal phalanx
    assert right["kintree_table"][0, 0] == 4294967295 and np.array_equal(right["kintree_table"][1], np.arange(16))
    comps = right["hands_components"]
    gram = comps @ comps.T
    np.testing.assert_allclose(gram, np.diag(np.diag(gram)), atol=1e-10)  # PCA rows are orthogonal
    assert np.all(np.diff(np.diag(gram)) <= 0)  # sorted by variance
    assert 0 < np.abs(right["posedirs"]).max() < 0.002  # small knuckle correctives


def test_fingertip_ids_sit_on_the_fingertips(right) -> None:
    verts = right["v_template"]
    joints = right["J_regressor"] @ verts
    for name, tip, distal in zip(("thumb", "index", "middle", "ring", "pinky"), mano.FINGERTIP_VERTEX_IDS,
                                 (15, 3, 6, 12, 9), strict=True):
        reach = np.linalg.norm(verts - joints[distal], axis=1)
        finger = right["weights"][:, distal] > 0.5
        assert reach[tip] > 0.97 * reach[finger].max(), name  # the farthest point of the distal phalanx
    for near, tip in ((744, 745), (320, 317), (444, 445), (443, 445), (554, 556), (671, 673)):
        assert np.linalg.norm(verts[near] - verts[tip]) < 0.008  # smplx / manopth tip ids land on tips too


def test_synthetic_model_loads_in_smplx_directly(right) -> None:
    struct_layer = smplx.MANO(model_path="", data_struct=smplx.utils.Struct(**right), use_pca=False,
                              flat_hand_mean=True, num_betas=10)
    file_layer = smplx.MANO(str(mano.synthetic_model_dir()), is_rhand=True, ext="npz", use_pca=False,
                            flat_hand_mean=True, num_betas=10)
    template_joints = right["J_regressor"] @ right["v_template"]
    for smplx_layer in (struct_layer, file_layer):
        out = smplx_layer(global_orient=torch.zeros(1, 3), hand_pose=torch.zeros(1, 45), betas=torch.zeros(1, 10))
        np.testing.assert_allclose(out.joints[0, :16].detach().numpy(), template_joints, atol=1e-6)
        np.testing.assert_allclose(out.vertices[0].detach().numpy(), right["v_template"], atol=1e-6)


def test_flat_pose_reproduces_the_template_and_its_joints(layer, right) -> None:
    flat = -torch.as_tensor(right["hands_mean"], dtype=torch.float32)[None]  # relative pose of the flat hand
    out = layer(torch.zeros(1, 3), flat, torch.zeros(1, 10))
    template_joints = right["J_regressor"] @ right["v_template"]
    np.testing.assert_allclose(out.joints[0, mano.MANO16_TO_21].numpy(), template_joints, atol=1e-6)
    np.testing.assert_allclose(out.joints[0, TIP_SLOTS].numpy(), right["v_template"][list(mano.FINGERTIP_VERTEX_IDS)],
                               atol=1e-6)
    np.testing.assert_allclose(out.vertices[0].numpy(), right["v_template"], atol=1e-6)


def test_fingertip_joints_equal_their_vertices(layer) -> None:
    gen = torch.Generator().manual_seed(0)
    out = layer(0.3 * torch.randn(4, 3, generator=gen), 0.3 * torch.randn(4, 45, generator=gen),
                torch.randn(4, 10, generator=gen))
    assert torch.equal(out.joints[:, TIP_SLOTS], out.vertices[:, list(mano.FINGERTIP_VERTEX_IDS)])
    assert out.joints.shape == (4, 21, 3) and out.joints.dtype == torch.float32


def test_mean_pose_is_a_gently_curled_hand(layer, right) -> None:
    out = layer(torch.zeros(1, 3), torch.zeros(1, 45), torch.zeros(1, 10))
    tips_y = out.joints[0, [8, 12, 16, 20], 1]
    knuckles_y = out.joints[0, [5, 9, 13, 17], 1]
    assert torch.all(tips_y < knuckles_y - 0.01)  # palm faces -y: a relaxed hand curls its fingers that way
    angles = np.linalg.norm(right["hands_mean"].reshape(15, 3), axis=1)
    assert 0.1 < angles.mean() < 0.5 and angles.max() < 0.8  # relaxed, not a fist


def test_left_hand_mirrors_right(layer, right) -> None:
    left_arrays = mano.load_model_file(mano.model_path("", "left"))
    np.testing.assert_allclose(left_arrays["v_template"], right["v_template"] * [-1, 1, 1])
    np.testing.assert_array_equal(left_arrays["f"], right["f"][:, ::-1])  # winding reversed: normals stay outwards
    left = mano.Mano("", side="left")
    gen = torch.Generator().manual_seed(1)
    pose, orient, betas = 0.4 * torch.randn(3, 45, generator=gen), torch.randn(3, 3, generator=gen), torch.randn(3, 10)
    out_r = layer(orient, pose, betas)
    out_l = left(orient * MIRROR, (pose.view(3, 15, 3) * MIRROR).view(3, 45), betas)
    torch.testing.assert_close(out_l.vertices, out_r.vertices * FLIP_X, atol=1e-6, rtol=0)
    torch.testing.assert_close(out_l.joints, out_r.joints * FLIP_X, atol=1e-6, rtol=0)


def test_synthetic_model_is_deterministic_and_seeded() -> None:
    a, b, c = mano.synthetic_model(seed=0), mano.synthetic_model(seed=0), mano.synthetic_model(seed=1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    np.testing.assert_array_equal(a["v_template"], c["v_template"])  # the mesh never depends on the seed
    assert not np.array_equal(a["shapedirs"], c["shapedirs"])


def test_cache_is_built_once_and_survives_racing_builders(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HMH_CACHE_DIR", str(tmp_path))
    folders, errors = [], []

    def build() -> None:
        try:
            folders.append(mano.synthetic_model_dir())
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(folders)) == 1 and folders[0].is_relative_to(tmp_path / "mano")
    assert sorted(p.name for p in folders[0].iterdir()) == ["MANO_LEFT.npz", "MANO_RIGHT.npz"]  # no temp files
    stamp = (folders[0] / "MANO_RIGHT.npz").stat().st_mtime_ns
    assert mano.synthetic_model_dir() == folders[0] and (folders[0] / "MANO_RIGHT.npz").stat().st_mtime_ns == stamp
    reloaded = mano.load_model_file(folders[0] / "MANO_LEFT.npz")
    np.testing.assert_array_equal(reloaded["posedirs"], mano.synthetic_model(side="left")["posedirs"])


def test_wrapper_shapes_dtypes_and_precision(layer) -> None:
    with pytest.raises(ValueError, match="hand_pose"):
        layer(torch.zeros(2, 3), torch.zeros(2, 44), torch.zeros(2, 10))
    with pytest.raises(ValueError, match="transl"):
        layer(torch.zeros(2, 3), torch.zeros(2, 45), torch.zeros(2, 10), transl=torch.zeros(3, 3))
    gen = torch.Generator().manual_seed(3)
    pose, orient = torch.randn(2, 3, 45, generator=gen), torch.randn(2, 3, 3, generator=gen)
    betas = torch.zeros(2, 3, 10)
    out = layer(orient, pose, betas, transl=torch.ones(2, 3, 3))
    assert out.vertices.shape == (2, 3, 778, 3) and out.joints.shape == (2, 3, 21, 3)
    flat = layer(orient.reshape(6, 3), pose.reshape(6, 45), betas.reshape(6, 10))
    torch.testing.assert_close(out.joints.reshape(6, 21, 3), flat.joints + 1.0)
    double = layer(orient.double(), pose.double(), betas.double())
    assert double.joints.dtype == torch.float64
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = layer(orient, pose, betas)
    assert auto.vertices.dtype == torch.float32  # fp32 inside, autocast or not
    torch.testing.assert_close(auto.joints, double.joints.float(), atol=1e-6, rtol=0)
    empty = layer(torch.zeros(0, 3), torch.zeros(0, 45), torch.zeros(0, 10))
    assert empty.vertices.shape == (0, 778, 3) and empty.joints.shape == (0, 21, 3)
    assert layer.faces.dtype == torch.long and layer.faces.shape == (1538, 3) and layer.side == "right"
    assert list(layer.parameters()) == []  # a fixed model: nothing for an optimizer to pick up
    assert "faces" not in layer.state_dict() and "layer.shapedirs" in layer.state_dict()


def test_index_tables() -> None:
    expected = [4, 3, 2, 1, 8, 7, 6, 5, 12, 11, 10, 9, 16, 15, 14, 13, 20, 19, 18, 17, 0]
    np.testing.assert_array_equal(mano.MANO21_TO_INTERHAND, expected)
    mano21 = np.arange(21)
    interhand = mano21[mano.MANO21_TO_INTERHAND]
    np.testing.assert_array_equal(interhand[mano.INTERHAND_TO_MANO21], mano21)
    assert mano.INTERHAND_TO_MANO21.dtype == np.int64 and mano.MANO21_TO_INTERHAND.dtype == np.int64
    np.testing.assert_array_equal(mano.MANO21_PARENTS[[1, 2, 3, 4]], [0, 1, 2, 3])  # thumb chain from the wrist
    assert all(mano.MANO21_PARENTS[1:] < np.arange(1, 21))
    mano16 = ["wrist", "index1", "index2", "index3", "middle1", "middle2", "middle3", "pinky1", "pinky2",
              "pinky3", "ring1", "ring2", "ring3", "thumb1", "thumb2", "thumb3"]
    assert [mano.MANO21_NAMES[i] for i in mano.MANO16_TO_21] == mano16


def test_model_path_resolution(tmp_path: Path) -> None:
    assert mano.model_path("", "left") == mano.synthetic_model_dir() / "MANO_LEFT.npz"
    folder = tmp_path / "models"
    folder.mkdir()
    with pytest.raises(mano.MANOFileError, match=r"models: no MANO_RIGHT\.pkl"):
        mano.model_path(folder, "right")
    (folder / "MANO_RIGHT.npz").write_bytes(b"")
    assert mano.model_path(folder, "right") == folder / "MANO_RIGHT.npz"
    (folder / "MANO_RIGHT.pkl").write_bytes(b"")
    assert mano.model_path(str(folder), "right") == folder / "MANO_RIGHT.pkl"  # the official file wins
    with pytest.raises(mano.MANOFileError, match="absent.npz: MANO model file not found"):
        mano.model_path(tmp_path / "absent.npz")
    with pytest.raises(ValueError, match="side"):
        mano.model_path("", "both")


def test_building_the_wrapper_prints_nothing_even_through_a_patched_print(right, monkeypatch, capfd) -> None:
    """Ray Train replaces builtins.print in its workers (logging past any stdout redirect): smplx's note about the
    10-coefficient shape space must not reach it, and the shape blend must equal smplx's own on the raw arrays."""
    import builtins

    printed = []
    monkeypatch.setattr(builtins, "print", lambda *args, **kwargs: printed.append(args))
    wrapper = mano.Mano(right)
    monkeypatch.undo()
    assert printed == [] and capfd.readouterr().out == ""
    direct = smplx.MANO(model_path="", data_struct=smplx.utils.Struct(**right), use_pca=False, flat_hand_mean=False,
                        num_betas=10)
    betas = torch.randn(2, 10, generator=torch.Generator().manual_seed(1))
    pose = torch.randn(2, 45, generator=torch.Generator().manual_seed(2)) * 0.3
    ours = wrapper(torch.zeros(2, 3), pose, betas)
    theirs = direct(global_orient=torch.zeros(2, 3), hand_pose=pose, betas=betas)
    torch.testing.assert_close(ours.vertices, theirs.vertices, atol=1e-6, rtol=0)
