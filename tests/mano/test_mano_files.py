"""MANO model files: the official pickle layout without chumpy, refusing malicious pickles, bad files, the CLI."""

from __future__ import annotations

import builtins
import codecs
import contextlib
import copyreg
import io
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import smplx
import torch

from hmh.cli import main
from hmh.mano import model as mano


@pytest.fixture(scope="module")
def right() -> dict[str, np.ndarray]:
    return mano.load_model_file(mano.model_path("", "right"))


@contextlib.contextmanager
def _fake_chumpy():
    """A stand-in ``chumpy.ch.Ch`` registered only while pickling: pickles name it exactly as chumpy would."""

    class Ch:
        def __init__(self, x: np.ndarray) -> None:
            self.x = x
            self._dirty_vars: set = set()
            self._itr = None
            self._depends_on_deps: dict = {}
            self._make_dense = self._make_sparse = False

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    saved = {name: sys.modules.get(name) for name in ("chumpy", "chumpy.ch")}
    package, module = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
    module.Ch = Ch
    sys.modules.update({"chumpy": package, "chumpy.ch": module})
    try:
        yield Ch
    finally:
        for name, original in saved.items():
            if original is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = original


def _official_pickle(model: dict[str, np.ndarray], path: Path, protocol: int = 2) -> None:
    """Write ``model`` in the official MANO layout: chumpy arrays, sparse J_regressor, Python-2 protocol."""
    with _fake_chumpy() as Ch:
        payload = {
            "v_template": Ch(model["v_template"]),
            "shapedirs": Ch(model["shapedirs"]),
            "posedirs": model["posedirs"],
            "J_regressor": scipy.sparse.csc_matrix(model["J_regressor"]),
            "weights": model["weights"],
            "kintree_table": model["kintree_table"],
            "f": model["f"].astype(np.uint32),
            "hands_components": model["hands_components"],
            "hands_mean": model["hands_mean"],
            "J": Ch(model["J_regressor"] @ model["v_template"]),
            "bs_style": "lbs",
            "bs_type": "lrotmin",
            "hands_coeffs": np.zeros((1554, 45)),
        }
        path.write_bytes(pickle.dumps(payload, protocol=protocol))


@pytest.mark.parametrize("protocol", [2, 1])
def test_official_layout_pickle_loads_without_chumpy(right, tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "MANO_RIGHT.pkl"
    _official_pickle(right, path, protocol)
    assert b"chumpy.ch" in path.read_bytes() and b"csc_matrix" in path.read_bytes()
    assert "chumpy" not in sys.modules
    loaded = mano.load_model_file(path)
    assert "chumpy" not in sys.modules
    assert set(loaded) == set(mano.EXPECTED_SHAPES)
    for key in mano.EXPECTED_SHAPES:
        np.testing.assert_array_equal(loaded[key], right[key], err_msg=key)
    assert isinstance(loaded["J_regressor"], np.ndarray)  # densified


def test_convert_cli_writes_a_file_smplx_loads(right, tmp_path: Path, capsys) -> None:
    source = tmp_path / "MANO_RIGHT.pkl"
    _official_pickle(right, source)
    out = tmp_path / "converted" / "MANO_RIGHT.npz"
    assert main(["mano", "convert", str(source), str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    with np.load(out, allow_pickle=False) as data:
        assert set(data.files) == set(mano.EXPECTED_SHAPES)
    layer = smplx.MANO(str(out.parent), is_rhand=True, ext="npz", use_pca=False, num_betas=10)
    ours = mano.Mano(str(out))
    pose = 0.3 * torch.randn(2, 45, generator=torch.Generator().manual_seed(0))
    expected = layer(global_orient=torch.zeros(2, 3), hand_pose=pose, betas=torch.zeros(2, 10)).vertices
    torch.testing.assert_close(ours(torch.zeros(2, 3), pose, torch.zeros(2, 10)).vertices, expected.detach())


class _Payload:
    """Pickles as a call to ``func(*args)``: what an attacker puts into a file."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker: Path) -> dict[str, object]:
    return {
        "os.system": _Payload(os.system, f"touch {marker}"),
        "builtins.eval": _Payload(builtins.eval, f"open({str(marker)!r}, 'w').write('pwned')"),
        "builtins.exec": _Payload(builtins.exec, f"open({str(marker)!r}, 'w').write('pwned')"),
        "subprocess.call": _Payload(subprocess.call, ["touch", str(marker)]),
        "numpy.save": _Payload(np.save, str(marker), np.zeros(1)),
    }


@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "builtins.exec", "subprocess.call", "numpy.save"])
def test_malicious_pickle_is_refused_without_side_effect(right, tmp_path: Path, name: str) -> None:
    marker = tmp_path / "marker"
    payload = dict(right)  # a complete, valid model with one poisoned entry hidden inside
    payload["J_regressor"] = [right["J_regressor"], _payloads(marker)[name]]
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    function = name.rsplit(".", 1)[1]  # its module may be spelled the Python-2 way (posix, commands, ...)
    with pytest.raises(mano.MANOFileError, match=rf"MANO_RIGHT\.pkl: refusing to load global [\w.]+\.{function}:"):
        mano.load_model_file(path)
    assert not marker.exists() and not Path(f"{marker}.npy").exists()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (_Payload(copyreg._reconstructor, np.dtype, set, None), "refusing to reconstruct"),  # allowed names, bad use
        (_Payload(codecs.encode, "text", "rot13"), "refusing _codecs.encode"),
    ],
)
def test_allowed_globals_cannot_be_misused(tmp_path: Path, payload, message: str) -> None:
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps({"v_template": payload}, protocol=2))
    with pytest.raises(mano.MANOFileError, match=rf"MANO_RIGHT\.pkl: .*{message}"):
        mano.load_model_file(path)


def _npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path


def test_bad_npz_files_name_the_file_and_key(right, tmp_path: Path) -> None:
    missing = {k: v for k, v in right.items() if k != "weights"}
    with pytest.raises(mano.MANOFileError, match=r"missing\.npz: missing key 'weights'"):
        mano.load_model_file(_npz(tmp_path / "missing.npz", missing))
    wrong = dict(right, shapedirs=right["shapedirs"][:, :, :5])
    with pytest.raises(mano.MANOFileError, match=r"wrong\.npz: key 'shapedirs' has shape \(778, 3, 5\), expected"):
        mano.load_model_file(_npz(tmp_path / "wrong.npz", wrong))
    float_faces = dict(right, f=right["f"].astype(np.float64))
    with pytest.raises(mano.MANOFileError, match=r"key 'f' has dtype float64, expected an integer array"):
        mano.load_model_file(_npz(tmp_path / "faces.npz", float_faces))
    nan = dict(right, hands_mean=np.full(45, np.nan))
    with pytest.raises(mano.MANOFileError, match=r"nan\.npz: key 'hands_mean' contains NaN"):
        mano.load_model_file(_npz(tmp_path / "nan.npz", nan))
    bad_tree = dict(right, kintree_table=np.stack([np.arange(16) + 1, np.arange(16)]))
    with pytest.raises(mano.MANOFileError, match=r"key 'kintree_table' has parents"):
        mano.load_model_file(_npz(tmp_path / "tree.npz", bad_tree))
    objects = dict(right, v_template=np.array([None] * 3, dtype=object))
    with pytest.raises(mano.MANOFileError, match=r"objects\.npz: not a readable \.npz.*object arrays") as info:
        mano.load_model_file(_npz(tmp_path / "objects.npz", objects))  # allow_pickle=False
    assert "allow_pickle" not in str(info.value)  # numpy's wording, advice hmh does not give


def test_truncated_and_corrupt_files_name_the_file(right, tmp_path: Path) -> None:
    good = tmp_path / "good.npz"
    mano.write_model(right, good)
    (tmp_path / "truncated.npz").write_bytes(good.read_bytes()[:1000])
    with pytest.raises(mano.MANOFileError, match=r"truncated\.npz: not a readable \.npz"):
        mano.load_model_file(tmp_path / "truncated.npz")
    (tmp_path / "garbage.npz").write_bytes(os.urandom(4096))
    with pytest.raises(mano.MANOFileError, match=r"garbage\.npz: not a readable \.npz") as info:
        mano.load_model_file(tmp_path / "garbage.npz")
    assert "allow_pickle" not in str(info.value)
    official = tmp_path / "official.pkl"
    _official_pickle(right, official)
    (tmp_path / "truncated.pkl").write_bytes(official.read_bytes()[:5000])
    with pytest.raises(mano.MANOFileError, match=r"truncated\.pkl: not a readable MANO pickle"):
        mano.load_model_file(tmp_path / "truncated.pkl")
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2], protocol=2))
    with pytest.raises(mano.MANOFileError, match=r"list\.pkl: expected a dict of arrays, got list"):
        mano.load_model_file(tmp_path / "list.pkl")
    (tmp_path / "model.obj").write_text("v 0 0 0\n")
    with pytest.raises(mano.MANOFileError, match=r"model\.obj: unknown MANO file type"):
        mano.load_model_file(tmp_path / "model.obj")
    with pytest.raises(mano.MANOFileError, match=r"absent\.pkl: MANO model file not found"):
        mano.load_model_file(tmp_path / "absent.pkl")


def test_write_model_validates_and_leaves_nothing_half_written(right, tmp_path: Path) -> None:
    target = tmp_path / "out.npz"
    with pytest.raises(mano.MANOFileError, match=r"out\.npz: missing key 'f'"):
        mano.write_model({k: v for k, v in right.items() if k != "f"}, target)
    assert list(tmp_path.iterdir()) == []
    mano.write_model(right, target)
    with np.load(target, allow_pickle=False) as data:
        assert data["f"].dtype == np.uint32  # like the official files


def test_cli_build_writes_both_hands(tmp_path: Path, capsys) -> None:
    out = tmp_path / "models"
    assert main(["mano", "build", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out / "MANO_RIGHT.npz") in printed and str(out / "MANO_LEFT.npz") in printed
    for side in ("right", "left"):
        built = mano.load_model_file(out / f"MANO_{side.upper()}.npz")
        np.testing.assert_array_equal(built["v_template"], mano.synthetic_model(side=side)["v_template"])


@pytest.mark.parametrize("pose", ["mean", "flat", "random"])
def test_cli_show_exports_a_posed_obj(tmp_path: Path, capsys, pose: str) -> None:
    out = tmp_path / f"{pose}.obj"
    assert main(["mano", "show", "", "--out", str(out), "--pose", pose, "--seed", "3"]) == 0
    assert str(out) in capsys.readouterr().out
    lines = out.read_text().splitlines()
    verts = np.array([[float(x) for x in line.split()[1:]] for line in lines if line.startswith("v ")])
    faces = np.array([[int(i) for i in line.split()[1:]] for line in lines if line.startswith("f ")])
    assert verts.shape == (778, 3) and faces.shape == (1538, 3) and faces.min() == 1 and faces.max() == 778
    template = mano.synthetic_model()["v_template"]
    flat = np.allclose(verts, template, atol=1e-5)
    assert flat == (pose == "flat")


def test_cli_errors_and_help(tmp_path: Path, capsys) -> None:
    assert main(["mano", "show", str(tmp_path / "nowhere.npz"), "--out", str(tmp_path / "x.obj")]) == 2
    assert "nowhere.npz: MANO model file not found" in capsys.readouterr().err
    assert not (tmp_path / "x.obj").exists()
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(_Payload(os.system, "true"), protocol=2))
    assert main(["mano", "convert", str(tmp_path / "evil.pkl"), str(tmp_path / "out.npz")]) == 2
    assert "refusing to load global" in capsys.readouterr().err and not (tmp_path / "out.npz").exists()
    for verb in ("build", "convert", "show"):
        with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stdout(io.StringIO()) as help_text:
            main(["mano", verb, "--help"])
        assert exit_info.value.code == 0 and "usage: hmh mano " + verb in help_text.getvalue()


def test_convert_onto_a_folder_or_an_unwritable_place_is_one_line(right, tmp_path: Path, one_line_error,
                                                                  monkeypatch) -> None:
    source = tmp_path / "MANO_RIGHT.npz"
    mano.write_model(right, source)
    folder = tmp_path / "models"
    (folder / "kept").mkdir(parents=True)
    assert main(["mano", "convert", str(source), str(folder)]) == 2
    assert f"{folder}: is a folder" in one_line_error() and os.listdir(folder) == ["kept"]
    plain = tmp_path / "plain.txt"
    plain.write_text("a file, not a folder")
    assert main(["mano", "convert", str(source), str(plain / "MANO_RIGHT.npz")]) == 2
    assert f"cannot write {plain / 'MANO_RIGHT.npz'}" in one_line_error()
    target = tmp_path / "readonly" / "MANO_RIGHT.npz"

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(mano.atomic.tempfile, "mkstemp", refuse)  # a read-only folder, even when run as root
    assert main(["mano", "convert", str(source), str(target)]) == 2
    assert "Permission denied" in one_line_error() and not target.exists()
    assert main(["mano", "build", "--out", str(plain)]) == 2
    assert str(plain) in one_line_error() and plain.read_text() == "a file, not a folder"
    assert main(["mano", "show", "", "--out", str(folder)]) == 2
    assert f"--out {folder}: is a folder" in one_line_error() and os.listdir(folder) == ["kept"]


def test_an_npz_holding_a_single_array_or_a_folder_given_as_the_model_is_one_line(tmp_path: Path,
                                                                                  one_line_error) -> None:
    single = tmp_path / "MANO_RIGHT.npz"
    with single.open("wb") as handle:
        np.save(handle, np.zeros(3))  # an .npy, not a zip of named arrays
    assert main(["mano", "show", str(single), "--out", str(tmp_path / "x.obj")]) == 2
    assert f"{single}: not a readable .npz MANO file: it holds a single .npy array" in one_line_error()
    assert main(["mano", "convert", str(tmp_path), str(tmp_path / "out.npz")]) == 2
    assert f"{tmp_path}: is a folder, expected a MANO model file" in one_line_error()
    assert not (tmp_path / "x.obj").exists() and not (tmp_path / "out.npz").exists()


def test_convert_writes_only_an_npz_so_it_never_replaces_a_pickle(right, tmp_path: Path, one_line_error) -> None:
    source = tmp_path / "MANO_RIGHT.pkl"
    _official_pickle(right, source)
    before = source.read_bytes()
    for out in (source, tmp_path / "MANO_RIGHT"):
        assert main(["mano", "convert", str(source), str(out)]) == 2
        assert f"{out}: a MANO model is written as .npz" in one_line_error()
    assert source.read_bytes() == before and not (tmp_path / "MANO_RIGHT").exists()


def test_build_writes_both_hands_or_neither(tmp_path: Path, one_line_error, snapshot) -> None:
    (tmp_path / "MANO_RIGHT.npz").write_bytes(b"the previous right hand")
    (tmp_path / "MANO_LEFT.npz").mkdir()
    before = snapshot(tmp_path)
    assert main(["mano", "build", "--out", str(tmp_path), "--seed", "3"]) == 2
    assert f"{tmp_path / 'MANO_LEFT.npz'}: is a folder" in one_line_error() and snapshot(tmp_path) == before


@pytest.mark.parametrize("verb", [["build", "--out", "x"], ["show", "", "--pose", "random", "--out", "x.obj"]])
def test_a_negative_seed_is_one_line(tmp_path: Path, one_line_error, verb: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["mano", *verb, "--seed", "-1"])
    assert exit_info.value.code == 2 and "--seed: invalid value '-1': expected an integer >= 0" in one_line_error()
