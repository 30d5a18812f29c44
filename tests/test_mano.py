"""MANO layer: synthetic hand, safe official-format loading, 21-joint wrapper, CLI."""

from __future__ import annotations

import contextlib
import copyreg
import io
import pickle
import sys
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import smplx
import torch

from hmh import mano
from hmh.cli import main


@pytest.fixture(scope="module")
def right() -> dict[str, np.ndarray]:
    return mano.load_model_file(mano.model_path("", "right"))


@pytest.fixture(scope="module")
def layer(right) -> mano.Mano:
    return mano.Mano(right, side="right")


def test_synthetic_model_has_mano_layout_and_manifold_topology(right) -> None:
    for key, shape in mano.EXPECTED_SHAPES.items():
        assert right[key].shape == shape, key
    faces = right["f"]
    directed = Counter((int(a), int(b)) for f in faces for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0])))
    assert max(directed.values()) == 1  # consistently wound: no edge runs twice the same way
    undirected = Counter((min(a, b), max(a, b)) for a, b in directed.elements())
    boundary = [e for e, n in undirected.items() if n == 1]
    assert len(boundary) == 16 and max(undirected.values()) == 2  # one 16-vertex wrist opening, edge-manifold
    assert np.allclose(right["weights"].sum(1), 1.0) and right["weights"].min() >= 0
    assert np.allclose(right["J_regressor"].sum(1), 1.0) and right["J_regressor"].min() >= 0


def test_synthetic_model_loads_in_smplx_directly(right) -> None:
    layer = smplx.MANO(model_path="", data_struct=smplx.utils.Struct(**right), use_pca=False, flat_hand_mean=True,
                       num_betas=10)
    out = layer(global_orient=torch.zeros(1, 3), hand_pose=torch.zeros(1, 45), betas=torch.zeros(1, 10))
    assert out.vertices.shape == (1, 778, 3)
    template_joints = right["J_regressor"] @ right["v_template"]
    np.testing.assert_allclose(out.joints[0, :16].detach().numpy(), template_joints, atol=1e-6)


def test_zero_pose_flat_hand_reproduces_template_joints(layer, right) -> None:
    flat = -torch.as_tensor(right["hands_mean"], dtype=torch.float32)[None]  # relative pose of the flat hand
    out = layer(torch.zeros(1, 3), flat, torch.zeros(1, 10))
    template_joints = right["J_regressor"] @ right["v_template"]
    order = [0, 5, 6, 7, 9, 10, 11, 17, 18, 19, 13, 14, 15, 1, 2, 3]  # MANO-16 -> MANO-21 slots
    np.testing.assert_allclose(out.joints[0, order].numpy(), template_joints, atol=1e-5)
    np.testing.assert_allclose(out.vertices[0].numpy(), right["v_template"], atol=1e-5)


def test_fingertip_joints_equal_their_vertices(layer) -> None:
    gen = torch.Generator().manual_seed(0)
    out = layer(0.3 * torch.randn(4, 3, generator=gen), 0.3 * torch.randn(4, 45, generator=gen),
                torch.randn(4, 10, generator=gen))
    tips = out.joints[:, [4, 8, 12, 16, 20]]
    assert torch.equal(tips, out.vertices[:, list(mano.FINGERTIP_VERTEX_IDS)])
    assert out.joints.shape == (4, 21, 3) and out.joints.dtype == torch.float32


def test_mean_pose_curls_fingers_towards_the_palm(layer) -> None:
    out = layer(torch.zeros(1, 3), torch.zeros(1, 45), torch.zeros(1, 10))
    tips_y = out.joints[0, [8, 12, 16, 20], 1]
    knuckles_y = out.joints[0, [5, 9, 13, 17], 1]
    assert torch.all(tips_y < knuckles_y - 0.02)  # palm faces -y: a relaxed hand curls its fingers that way


def test_left_hand_mirrors_right(layer) -> None:
    left = mano.Mano("", side="left")
    pose = 0.2 * torch.randn(2, 45, generator=torch.Generator().manual_seed(1))
    orient = 0.2 * torch.randn(2, 3, generator=torch.Generator().manual_seed(2))
    mirror_pose = torch.tensor([1.0, -1.0, -1.0])
    out_r = layer(orient, pose, torch.zeros(2, 10))
    out_l = left(orient * mirror_pose, (pose.view(2, 15, 3) * mirror_pose).view(2, 45), torch.zeros(2, 10))
    flip = torch.tensor([-1.0, 1.0, 1.0])
    torch.testing.assert_close(out_l.vertices, out_r.vertices * flip, atol=1e-5, rtol=0)


def test_synthetic_model_is_deterministic_and_cached() -> None:
    a, b = mano.synthetic_model(seed=0), mano.synthetic_model(seed=0)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    folder = mano.synthetic_model_dir()
    stamp = (folder / "MANO_RIGHT.npz").stat().st_mtime_ns
    assert mano.synthetic_model_dir() == folder and (folder / "MANO_RIGHT.npz").stat().st_mtime_ns == stamp


def test_wrapper_checks_shapes_and_keeps_dtype(layer) -> None:
    with pytest.raises(ValueError, match="hand_pose"):
        layer(torch.zeros(2, 3), torch.zeros(2, 44), torch.zeros(2, 10))
    out = layer(torch.zeros(1, 3, dtype=torch.float64), torch.zeros(1, 45, dtype=torch.float64),
                torch.zeros(1, 10, dtype=torch.float64))
    assert out.joints.dtype == torch.float64
    assert layer(torch.zeros(0, 3), torch.zeros(0, 45), torch.zeros(0, 10)).vertices.shape == (0, 778, 3)


def test_index_tables_are_inverse_permutations() -> None:
    idx = np.arange(21)
    assert np.array_equal(idx[mano.MANO21_TO_INTERHAND][mano.INTERHAND_TO_MANO21], idx)
    assert mano.MANO21_TO_INTERHAND[20] == 0  # InterHand's wrist (last) is MANO-21's first joint
    assert mano.INTERHAND_TO_MANO21[4] == 0  # MANO-21 thumb tip is InterHand's first joint


def _official_pickle(model: dict[str, np.ndarray], path: Path) -> None:
    """Write a pickle in the official layout: chumpy Ch objects, sparse J_regressor, protocol 2."""
    ch_module = types.ModuleType("chumpy.ch")

    class Ch:
        def __reduce_ex__(self, protocol):  # what Python 2 wrote for chumpy objects
            return (copyreg._reconstructor, (Ch, object, None), {"x": self.x, "_dirty_vars": set()})

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    ch_module.Ch = Ch
    saved = {name: sys.modules.get(name) for name in ("chumpy", "chumpy.ch")}
    sys.modules["chumpy"] = types.ModuleType("chumpy")
    sys.modules["chumpy.ch"] = ch_module
    try:
        payload = {}
        for key, value in model.items():
            if key in ("v_template", "shapedirs", "posedirs", "weights"):
                obj = Ch()
                obj.x = value
                payload[key] = obj
            elif key == "J_regressor":
                payload[key] = scipy.sparse.csc_matrix(value)
            else:
                payload[key] = value
        payload["bs_style"] = "lbs"
        path.write_bytes(pickle.dumps(payload, protocol=2))
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def test_official_layout_pickle_loads_without_chumpy(right, tmp_path: Path) -> None:
    path = tmp_path / "MANO_RIGHT.pkl"
    _official_pickle(right, path)
    assert "chumpy" not in sys.modules
    loaded = mano.load_model_file(path)
    for key in mano.EXPECTED_SHAPES:
        np.testing.assert_array_equal(loaded[key], right[key], err_msg=key)
    out = tmp_path / "converted.npz"
    assert main(["mano", "convert", str(path), str(out)]) == 0
    np.testing.assert_array_equal(mano.load_model_file(out)["J_regressor"], right["J_regressor"])


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_malicious_pickle_is_refused_without_side_effect(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps({"v_template": _Exploit(marker)}, protocol=2))
    with pytest.raises(mano.MANOFileError, match=r"refusing to load global (builtins|__builtin__)\.eval"):
        mano.load_model_file(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps({"x": _OsSystem()}, protocol=2))
    with pytest.raises(mano.MANOFileError, match="refusing"):
        mano.load_model_file(path)
    assert not (tmp_path / "os-marker").exists()


class _OsSystem:
    def __reduce__(self):
        import os

        return (os.system, ("touch os-marker",))


def test_bad_files_name_the_file_and_key(right, tmp_path: Path) -> None:
    missing = dict(right)
    del missing["weights"]
    path = tmp_path / "missing.npz"
    np.savez(path, **missing)
    with pytest.raises(mano.MANOFileError, match=r"missing\.npz.*'weights'"):
        mano.load_model_file(path)
    wrong = dict(right, shapedirs=right["shapedirs"][:, :, :5])
    np.savez(tmp_path / "wrong.npz", **wrong)
    with pytest.raises(mano.MANOFileError, match=r"'shapedirs' has shape \(778, 3, 5\)"):
        mano.load_model_file(tmp_path / "wrong.npz")
    good = tmp_path / "good.npz"
    mano.write_model(right, good)
    (tmp_path / "truncated.npz").write_bytes(good.read_bytes()[:1000])
    with pytest.raises(mano.MANOFileError, match="truncated.npz"):
        mano.load_model_file(tmp_path / "truncated.npz")
    (tmp_path / "truncated.pkl").write_bytes(pickle.dumps({"a": np.zeros(100)}, protocol=2)[:50])
    with pytest.raises(mano.MANOFileError, match="truncated.pkl"):
        mano.load_model_file(tmp_path / "truncated.pkl")
    with pytest.raises(mano.MANOFileError, match="not found"):
        mano.load_model_file(tmp_path / "absent.pkl")


def test_cli_build_and_show(tmp_path: Path) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["mano", "build", "--out", str(tmp_path / "models")]) == 0
        assert main(["mano", "show", str(tmp_path / "models"), "--out", str(tmp_path / "hand.obj"),
                     "--pose", "random"]) == 0
    assert {p.name for p in (tmp_path / "models").iterdir()} == {"MANO_RIGHT.npz", "MANO_LEFT.npz"}
    lines = (tmp_path / "hand.obj").read_text().splitlines()
    assert sum(line.startswith("v ") for line in lines) == 778 and sum(line.startswith("f ") for line in lines) == 1538
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert main(["mano", "show", str(tmp_path / "nowhere.npz"), "--out", str(tmp_path / "x.obj")]) == 2
    assert "nowhere.npz" in err.getvalue()
