"""MANO through smplx: a safe model-file loader, the cached synthetic hand, and a 21-joint ``Mano`` module.

- :func:`load_model_file` reads ``.npz`` and ``.pkl`` MANO files, including the official ``MANO_RIGHT.pkl``
  (Python-2 pickle of chumpy objects and a scipy sparse ``J_regressor``) without chumpy, through a restricted
  unpickler that refuses every global outside numpy / scipy.sparse reconstruction and the chumpy stubs.
- :func:`synthetic_model_dir` builds the synthetic MANO-format hand (:mod:`hmh.mano_synthetic`) once per machine.
- :class:`Mano` returns vertices ``(N, 778, 3)`` and joints ``(N, 21, 3)`` in metres, MANO-21 order (wrist,
  thumb1-4, index1-4, middle1-4, ring1-4, pinky1-4); fingertips are vertices 745/317/445/556/673.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hmh import atomic, mano_synthetic
from hmh.errors import HmhError

log = logging.getLogger(__name__)

NUM_VERTS = 778
NUM_FACES = 1538
NUM_JOINTS = 21
FINGERTIP_VERTEX_IDS = (745, 317, 445, 556, 673)  # thumb, index, middle, ring, pinky (BlurHand / Moon convention)
MANO21_NAMES = ("wrist", "thumb1", "thumb2", "thumb3", "thumb4", "index1", "index2", "index3", "index4",
                "middle1", "middle2", "middle3", "middle4", "ring1", "ring2", "ring3", "ring4",
                "pinky1", "pinky2", "pinky3", "pinky4")
INTERHAND_NAMES = ("thumb4", "thumb3", "thumb2", "thumb1", "index4", "index3", "index2", "index1",
                   "middle4", "middle3", "middle2", "middle1", "ring4", "ring3", "ring2", "ring1",
                   "pinky4", "pinky3", "pinky2", "pinky1", "wrist")
MANO21_TO_INTERHAND = np.array([MANO21_NAMES.index(n) for n in INTERHAND_NAMES], dtype=np.int64)
INTERHAND_TO_MANO21 = np.array([INTERHAND_NAMES.index(n) for n in MANO21_NAMES], dtype=np.int64)
MANO21_PARENTS = np.array([-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19], dtype=np.int64)
# MANO's 16 regressed joints (wrist, index1-3, middle1-3, pinky1-3, ring1-3, thumb1-3) -> MANO-21 slots
_MANO16_TO_21 = np.array([0, 5, 6, 7, 9, 10, 11, 17, 18, 19, 13, 14, 15, 1, 2, 3], dtype=np.int64)
_TIP_SLOTS = np.array([4, 8, 12, 16, 20], dtype=np.int64)

EXPECTED_SHAPES: dict[str, tuple[int, ...]] = {
    "v_template": (NUM_VERTS, 3),
    "shapedirs": (NUM_VERTS, 3, 10),
    "posedirs": (NUM_VERTS, 3, 135),
    "J_regressor": (16, NUM_VERTS),
    "weights": (NUM_VERTS, 16),
    "kintree_table": (2, 16),
    "f": (NUM_FACES, 3),
    "hands_components": (45, 45),
    "hands_mean": (45,),
}


class MANOFileError(HmhError):
    """A MANO model file that cannot be read safely or has the wrong content (names the file and key)."""


class _ChumpyStub:
    """Stands in for ``chumpy.ch.Ch`` and friends: keeps the pickled state; the array lives in ``'x'``."""

    def __init__(self, *args, **kwargs) -> None:
        self.state: dict = {}

    def __setstate__(self, state) -> None:
        self.state = state if isinstance(state, dict) else {"x": state}


_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("scipy.sparse.csc", "csc_matrix"), ("scipy.sparse._csc", "csc_matrix"), ("scipy.sparse.csr", "csr_matrix"),
    ("scipy.sparse._csr", "csr_matrix"), ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"),
    ("__builtin__", "object"), ("builtins", "object"), ("__builtin__", "set"), ("builtins", "set"),
    ("_codecs", "encode"),  # how Python 3 writes bytes (array buffers) in protocol-2 pickles: harmless
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path) -> None:
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "chumpy":
            return _ChumpyStub
        if (module, name) in _ALLOWED_GLOBALS:
            if module in ("copy_reg", "copyreg") or module.startswith("__builtin"):
                return super().find_class("copyreg" if "copy" in module else "builtins", name)
            return super().find_class(module, name)
        raise MANOFileError(
            f"{self.path}: refusing to load global {module}.{name}: a MANO file may only contain numpy arrays, "
            "scipy sparse matrices and chumpy objects (this file may be malicious or not a MANO model)"
        )


def _to_array(value, key: str, path: Path) -> np.ndarray:
    if isinstance(value, _ChumpyStub):
        if "x" not in value.state:
            raise MANOFileError(f"{path}: key {key!r} is a chumpy object without its array ('x')")
        value = value.state["x"]
    if hasattr(value, "toarray"):  # scipy sparse
        value = value.toarray()
    try:
        return np.asarray(value)
    except Exception as err:  # noqa: BLE001 - any conversion failure is a bad file
        raise MANOFileError(f"{path}: key {key!r} is not an array: {err}") from err


def _validate(arrays: dict[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
    out = {}
    for key, shape in EXPECTED_SHAPES.items():
        if key not in arrays:
            raise MANOFileError(f"{path}: missing key {key!r} (a MANO file needs {', '.join(EXPECTED_SHAPES)})")
        value = arrays[key]
        if value.shape != shape:
            raise MANOFileError(f"{path}: key {key!r} has shape {value.shape}, expected {shape}")
        if not np.issubdtype(value.dtype, np.number):
            raise MANOFileError(f"{path}: key {key!r} has dtype {value.dtype}, expected a numeric array")
        if not np.all(np.isfinite(value)):
            raise MANOFileError(f"{path}: key {key!r} contains NaN or infinite values")
        out[key] = value
    if out["f"].min() < 0 or out["f"].max() >= NUM_VERTS:
        raise MANOFileError(f"{path}: key 'f' indexes vertices outside 0..{NUM_VERTS - 1}")
    out["f"] = out["f"].astype(np.int64)
    out["kintree_table"] = out["kintree_table"].astype(np.int64)
    return out


def load_model_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a MANO ``.npz`` or ``.pkl`` (official, chumpy-free) file into validated dense numpy arrays."""
    path = Path(path)
    if not path.is_file():
        raise MANOFileError(f"{path}: MANO model file not found")
    raw: dict
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                raw = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise MANOFileError(f"{path}: not a readable .npz MANO file: {err}") from err
    elif path.suffix == ".pkl":
        try:
            with path.open("rb") as f:
                loaded = _RestrictedUnpickler(f, path).load()
        except MANOFileError:
            raise
        except Exception as err:  # noqa: BLE001 - truncated or corrupt pickles raise many types
            raise MANOFileError(f"{path}: not a readable MANO pickle: {type(err).__name__}: {err}") from err
        if not isinstance(loaded, dict):
            raise MANOFileError(f"{path}: expected a dict of arrays, got {type(loaded).__name__}")
        raw = loaded
    else:
        raise MANOFileError(f"{path}: unknown MANO file type {path.suffix!r} (expected .pkl or .npz)")
    arrays = {k: _to_array(raw[k], k, path) for k in EXPECTED_SHAPES if k in raw}
    return _validate(arrays, path)


def synthetic_model(seed: int = 0, side: str = "right") -> dict[str, np.ndarray]:
    """The procedural MANO-format hand (deterministic for a seed); ``side`` 'left' mirrors the right hand."""
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    model = mano_synthetic.build_right(seed)
    return mano_synthetic.mirror(model) if side == "left" else model


def write_model(model: dict[str, np.ndarray], path: str | os.PathLike) -> None:
    """Write MANO arrays as ``.npz`` atomically."""
    with atomic.atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez(f, **model)


def cache_root() -> Path:
    """``$HMH_CACHE_DIR``, else ``$XDG_CACHE_HOME/hmh``, else ``~/.cache/hmh``."""
    if os.environ.get("HMH_CACHE_DIR"):
        return Path(os.environ["HMH_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hmh"


def synthetic_model_dir() -> Path:
    """Folder with the synthetic ``MANO_RIGHT.npz`` and ``MANO_LEFT.npz``, built once per machine."""
    folder = cache_root() / f"mano-synthetic-v{mano_synthetic.VERSION}"
    for side in ("right", "left"):
        target = folder / f"MANO_{side.upper()}.npz"
        if not target.exists():
            log.info("building the synthetic MANO %s hand into %s", side, target)
            write_model(synthetic_model(side=side), target)  # atomic: concurrent builders write identical files
    return folder


def model_path(mano_path: str | os.PathLike, side: str = "right") -> Path:
    """Resolve a MANO location: "" = the synthetic hand; a folder = its MANO_{RIGHT,LEFT}.{pkl,npz}; a file."""
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    if str(mano_path) == "":
        return synthetic_model_dir() / f"MANO_{side.upper()}.npz"
    path = Path(mano_path)
    if path.is_dir():
        for ext in (".pkl", ".npz"):
            candidate = path / f"MANO_{side.upper()}{ext}"
            if candidate.exists():
                return candidate
        raise MANOFileError(f"{path}: no MANO_{side.upper()}.pkl or .npz in this folder")
    if not path.exists():
        raise MANOFileError(f"{path}: MANO model file not found")
    return path


@dataclass
class ManoOutput:
    vertices: torch.Tensor  # (N, 778, 3) metres
    joints: torch.Tensor  # (N, 21, 3) metres, MANO-21 order


class Mano(torch.nn.Module):
    """``smplx.MANO`` (45-D axis-angle hand pose relative to the mean pose) with 21 joints, fp32 inside.

    ``Mano(model, side)``: ``model`` is a dict of MANO arrays, a model file path, or "" for the synthetic hand.
    """

    def __init__(self, model: dict[str, np.ndarray] | str | os.PathLike = "", side: str = "right") -> None:
        super().__init__()
        import smplx  # heavy; keep `import hmh.mano` light

        arrays = model if isinstance(model, dict) else load_model_file(model_path(model, side))
        self.side = side
        struct = smplx.utils.Struct(**{k: np.asarray(v) for k, v in arrays.items()})
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            self.layer = smplx.MANO(
                model_path="", data_struct=struct, is_rhand=side == "right", use_pca=False,
                flat_hand_mean=False, num_betas=10, batch_size=1, create_global_orient=False,
                create_hand_pose=False, create_betas=False, create_transl=False,
            )
        self.layer.requires_grad_(False)  # a fixed model: nothing in it is trained
        self.register_buffer("faces", torch.as_tensor(np.asarray(arrays["f"], dtype=np.int64)), persistent=False)

    def forward(
        self,
        global_orient: torch.Tensor,
        hand_pose: torch.Tensor,
        betas: torch.Tensor,
        transl: torch.Tensor | None = None,
    ) -> ManoOutput:
        """``global_orient (N, 3)``, ``hand_pose (N, 45)``, ``betas (N, 10)``, ``transl (N, 3)`` -> ManoOutput."""
        n = global_orient.shape[0]
        for name, value, width in (("global_orient", global_orient, 3), ("hand_pose", hand_pose, 45),
                                   ("betas", betas, 10)) + ((("transl", transl, 3),) if transl is not None else ()):
            if value.shape != (n, width):
                raise ValueError(f"Mano.forward: {name} must have shape ({n}, {width}), got {tuple(value.shape)}")
        dtype = global_orient.dtype
        if n == 0:
            empty = global_orient.new_zeros((0, NUM_VERTS, 3))
            return ManoOutput(vertices=empty, joints=global_orient.new_zeros((0, NUM_JOINTS, 3)))
        with torch.autocast(device_type=global_orient.device.type, enabled=False):
            out = self.layer(
                global_orient=global_orient.float(), hand_pose=hand_pose.float(), betas=betas.float(),
                transl=None if transl is None else transl.float(),
            )
        vertices = out.vertices  # (N, 778, 3)
        joints16 = out.joints[:, :16]  # (N, 16, 3) MANO order
        joints = vertices.new_empty((n, NUM_JOINTS, 3))
        joints[:, _MANO16_TO_21] = joints16
        joints[:, _TIP_SLOTS] = vertices[:, list(FINGERTIP_VERTEX_IDS)]
        return ManoOutput(vertices=vertices.to(dtype), joints=joints.to(dtype))
