"""MANO through smplx: a safe model-file loader, the cached synthetic hand, and a 21-joint ``Mano`` module.

- :func:`load_model_file` reads ``.npz`` and ``.pkl`` MANO files, including the official ``MANO_RIGHT.pkl``
  (Python-2 pickle of chumpy objects and a scipy sparse ``J_regressor``) without chumpy or scipy, through a
  restricted unpickler that refuses every global outside numpy array reconstruction and two stand-in classes.
- :func:`synthetic_model_dir` builds the synthetic MANO-format hand (:mod:`hmh.mano.synthetic`) once per machine.
- :class:`Mano` returns vertices ``(N, 778, 3)`` and joints ``(N, 21, 3)`` in metres, MANO-21 order (wrist,
  thumb1-4, index1-4, middle1-4, ring1-4, pinky1-4); fingertips are vertices 745/317/445/556/673.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hmh.errors import HmhError
from hmh.files import atomic
from hmh.mano import synthetic as mano_synthetic

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
MANO16_TO_21 = np.array([0, 5, 6, 7, 9, 10, 11, 17, 18, 19, 13, 14, 15, 1, 2, 3], dtype=np.int64)
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
_INTEGER_KEYS = ("kintree_table", "f")


class MANOFileError(HmhError):
    """A MANO model file that cannot be read safely or has the wrong content (names the file and key)."""


class _ChumpyStub:
    """Stands in for ``chumpy.ch.Ch`` and friends: keeps the pickled ``__dict__``; the array lives in ``'x'``."""

    def __init__(self, *args, **kwargs) -> None:
        self.state: dict = {}

    def __setstate__(self, state) -> None:
        self.state = state if isinstance(state, dict) else {}


class _SparseStub:
    """Stands in for scipy's ``csc_matrix`` / ``csr_matrix``: keeps the pickled ``__dict__``, densified later."""

    format = ""

    def __init__(self, *args, **kwargs) -> None:
        self.state: dict = {}

    def __setstate__(self, state) -> None:
        self.state = state if isinstance(state, dict) else {}

    def toarray(self) -> np.ndarray:
        shape = tuple(int(n) for n in self.state.get("_shape", self.state.get("shape", ())))
        data, indices, indptr = (np.asarray(self.state[k]) for k in ("data", "indices", "indptr"))
        if len(shape) != 2 or len(indptr) != shape[0 if self.format == "csr" else 1] + 1:
            raise ValueError(f"inconsistent {self.format} matrix of shape {shape}")
        dense = np.zeros(shape, dtype=data.dtype)
        major = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))  # column (csc) or row (csr) of each entry
        rows, cols = (indices, major) if self.format == "csc" else (major, indices)
        np.add.at(dense, (rows, cols), data)
        return dense


class _CscStub(_SparseStub):
    format = "csc"


class _CsrStub(_SparseStub):
    format = "csr"


def _reconstructor(cls, base, state):
    """Safe ``copyreg._reconstructor`` (protocol 0/1 pickles): only creates the stand-in classes."""
    if base is not object or cls not in (_ChumpyStub, _CscStub, _CsrStub):
        raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r} from {base!r}")
    return cls()


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as Python 3 writes bytes into protocol-2 pickles, restricted to latin-1 text."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], object]:
    """Every global a MANO pickle may name, mapped to what it is allowed to be."""
    from numpy._core import multiarray, numeric

    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    for kind, stub in (("csc", _CscStub), ("csr", _CsrStub)):
        for module in (f"scipy.sparse.{kind}", f"scipy.sparse._{kind}"):
            allowed[(module, f"{kind}_matrix")] = stub
            allowed[(module, f"{kind}_array")] = stub
    for builtins in ("__builtin__", "builtins"):
        allowed[(builtins, "set")] = set
        allowed[(builtins, "object")] = object
    for copyreg in ("copy_reg", "copyreg"):
        allowed[(copyreg, "_reconstructor")] = _reconstructor
    allowed[("_codecs", "encode")] = _latin1_encode
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals of :func:`_allowed_globals` (chumpy classes become :class:`_ChumpyStub`)."""

    def __init__(self, file, path: Path) -> None:
        super().__init__(file, encoding="latin1")
        self.path = path
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str):
        if module == "chumpy" or module.startswith("chumpy."):
            return _ChumpyStub
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        raise MANOFileError(
            f"{self.path}: refusing to load global {module}.{name}: a MANO file may only contain numpy arrays, "
            "scipy sparse matrices and chumpy objects (this file may be malicious or not a MANO model)"
        )


def _to_array(value, key: str, path: Path) -> np.ndarray:
    if isinstance(value, _ChumpyStub):
        if "x" not in value.state:
            raise MANOFileError(f"{path}: key {key!r} is a chumpy object without its array ('x')")
        value = value.state["x"]
    try:
        if isinstance(value, _SparseStub):
            return value.toarray()
        return np.asarray(value)
    except (KeyError, ValueError, TypeError, IndexError) as err:
        raise MANOFileError(f"{path}: key {key!r} is not a readable array: {err!r}") from err


def validate_model(arrays: dict[str, np.ndarray], source: str | os.PathLike) -> dict[str, np.ndarray]:
    """Check every MANO key's presence, shape, dtype and values; return just those keys (``f`` as int64).

    ``source`` names the file in error messages.
    """
    out = {}
    for key, shape in EXPECTED_SHAPES.items():
        if key not in arrays:
            raise MANOFileError(f"{source}: missing key {key!r} (a MANO file needs {', '.join(EXPECTED_SHAPES)})")
        value = np.asarray(arrays[key])
        if value.shape != shape:
            raise MANOFileError(f"{source}: key {key!r} has shape {value.shape}, expected {shape}")
        kinds = "iu" if key in _INTEGER_KEYS else "f"
        if value.dtype.kind not in kinds:
            expected = "an integer" if key in _INTEGER_KEYS else "a floating-point"
            raise MANOFileError(f"{source}: key {key!r} has dtype {value.dtype}, expected {expected} array")
        if kinds == "f" and not np.all(np.isfinite(value)):
            raise MANOFileError(f"{source}: key {key!r} contains NaN or infinite values")
        out[key] = value
    faces = out["f"].astype(np.int64)
    if faces.min() < 0 or faces.max() >= NUM_VERTS:
        raise MANOFileError(f"{source}: key 'f' indexes vertices outside 0..{NUM_VERTS - 1}")
    out["f"] = faces
    parents = out["kintree_table"][0, 1:].astype(np.int64)
    if np.any(parents < 0) or np.any(parents >= np.arange(1, 16)):
        raise MANOFileError(
            f"{source}: key 'kintree_table' has parents {parents.tolist()}: each must precede its joint"
        )
    return out


def _npz_refusal(message: str) -> str:
    """numpy's reason for not reading an .npz, without its advice to allow pickles (``allow_pickle=True``)."""
    if "Object arrays" in message:
        return ("it holds object arrays (pickled Python objects, which could run code when loaded); a MANO .npz "
                "holds numeric arrays only (hmh mano convert writes one from the official .pkl)")
    if "allow_pickle" in message:
        return "it is not a zip of arrays (numpy would read it as a pickle, which hmh never does for an .npz)"
    return message


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` (never unpickling), or a :class:`MANOFileError` naming the file."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):  # an .npy array under an .npz name
            raise ValueError("it holds a single .npy array, not a zip of named arrays")
        with data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise MANOFileError(f"{path}: not a readable .npz MANO file: {_npz_refusal(str(err))}") from None


def load_model_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a MANO ``.npz`` or ``.pkl`` (official, chumpy-free) file into validated dense numpy arrays.

    Returns ``v_template (778, 3)``, ``shapedirs (778, 3, 10)``, ``posedirs (778, 3, 135)``, ``J_regressor
    (16, 778)`` (dense), ``weights (778, 16)``, ``kintree_table (2, 16)``, ``f (1538, 3)`` (int64),
    ``hands_components (45, 45)`` and ``hands_mean (45,)``. Raises :class:`MANOFileError` naming file and key.
    """
    path = Path(path)
    if path.is_dir():
        raise MANOFileError(f"{path}: is a folder, expected a MANO model file (MANO_RIGHT or MANO_LEFT .pkl/.npz)")
    if not path.is_file():
        raise MANOFileError(f"{path}: MANO model file not found")
    if path.suffix == ".npz":
        raw = _read_npz(path)
    elif path.suffix == ".pkl":
        try:
            with path.open("rb") as f:
                raw = _RestrictedUnpickler(f, path).load()
        except MANOFileError:
            raise
        except Exception as err:  # noqa: BLE001 - truncated or corrupt pickles raise many exception types
            raise MANOFileError(f"{path}: not a readable MANO pickle: {type(err).__name__}: {err}") from err
        if not isinstance(raw, dict):
            raise MANOFileError(f"{path}: expected a dict of arrays, got {type(raw).__name__}")
    else:
        raise MANOFileError(f"{path}: unknown MANO file type {path.suffix!r} (expected .pkl or .npz)")
    return validate_model({k: _to_array(raw[k], k, path) for k in EXPECTED_SHAPES if k in raw}, path)


def synthetic_model(seed: int = 0, side: str = "right") -> dict[str, np.ndarray]:
    """The procedural MANO-format hand (deterministic for a seed); ``side`` 'left' mirrors the right hand."""
    _check_side(side)
    model = mano_synthetic.build_right(seed)
    return mano_synthetic.mirror(model) if side == "left" else model


def write_model(model: dict[str, np.ndarray], path: str | os.PathLike) -> None:
    """Validate MANO arrays and write them as an ``.npz`` atomically (``f`` as uint32, like the official files)."""
    write_models({Path(path): model})


def write_models(models: dict[Path, dict[str, np.ndarray]]) -> None:
    """Write each ``path: model`` as :func:`write_model` does, all or none: every model is validated and every
    target checked (an ``.npz`` name, not a folder) before any is written, and files replace their targets only
    once all are written."""
    arrays = {path: validate_model(model, path) for path, model in models.items()}
    for path in models:
        if path.is_dir():
            raise MANOFileError(f"{path}: is a folder; give the path of the .npz file to write")
        if path.suffix != ".npz":
            raise MANOFileError(f"{path}: a MANO model is written as .npz; give a path ending in .npz")
    target = next(iter(models))
    try:
        with contextlib.ExitStack() as stack:
            for target, model in arrays.items():
                tmp = stack.enter_context(atomic.atomic_path(target))  # renamed when the stack closes without error
                with tmp.open("wb") as f:
                    np.savez(f, **dict(model, f=model["f"].astype(np.uint32)))
    except OSError as err:  # a rename names its target second
        raise MANOFileError(f"cannot write {err.filename2 or target}: {err.strerror or err}") from None


def cache_root() -> Path:
    """``$HMH_CACHE_DIR``, else ``$XDG_CACHE_HOME/hmh``, else ``~/.cache/hmh``."""
    if os.environ.get("HMH_CACHE_DIR"):
        return Path(os.environ["HMH_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hmh"


def cache_folder(*parts: str) -> Path:
    """``cache_root() / parts``, created if missing, for writing; a cache that is not a writable folder raises
    :class:`HmhError` naming it and the variable that chose it."""
    variable = next((name for name in ("HMH_CACHE_DIR", "XDG_CACHE_HOME") if os.environ.get(name)), "HOME")
    root = cache_root()
    folder = root.joinpath(*parts)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        reason = "" if os.access(folder, os.W_OK | os.X_OK) else "no write permission"
    except (FileExistsError, NotADirectoryError):
        reason = _not_a_folder(folder)
    except OSError as err:
        reason = err.strerror or str(err)
    if reason:
        raise HmhError(f"cache folder {root} (from ${variable}) is not a writable folder ({reason}); "
                       "set HMH_CACHE_DIR to one")
    return folder


def _not_a_folder(folder: Path) -> str:
    """Why ``folder`` cannot be created: the first path on the way that is a file or a dangling symbolic link."""
    for path in (*reversed(folder.parents), folder):
        if path.is_symlink() and not path.exists():
            return f"{path} is a symbolic link to a missing folder"
        if path.exists() and not path.is_dir():
            return f"{path} is a file"
    return "it or a folder above it is not a folder"


def synthetic_model_dir() -> Path:
    """Folder with the synthetic ``MANO_RIGHT.npz`` and ``MANO_LEFT.npz``, built once per machine and version.

    ``<cache_root>/mano/synthetic-v<VERSION>/``. Writes are atomic, so processes that race build identical files
    and the last rename wins; a reader never sees half a file.
    """
    folder = cache_root() / "mano" / f"synthetic-v{mano_synthetic.VERSION}"
    targets = {side: folder / f"MANO_{side.upper()}.npz" for side in ("right", "left")}
    if not all(target.exists() for target in targets.values()):
        cache_folder("mano", folder.name)
        log.info("building the synthetic MANO hands into %s", folder)
        right = mano_synthetic.build_right()
        write_model(right, targets["right"])
        write_model(mano_synthetic.mirror(right), targets["left"])
    return folder


def model_path(mano_path: str | os.PathLike, side: str = "right") -> Path:
    """Resolve a MANO location: "" = the synthetic hand; a folder = its MANO_{RIGHT,LEFT}.{pkl,npz}; a file."""
    _check_side(side)
    if str(mano_path) == "":
        return synthetic_model_dir() / f"MANO_{side.upper()}.npz"
    path = Path(mano_path)
    if path.is_dir():
        for ext in (".pkl", ".npz"):
            candidate = path / f"MANO_{side.upper()}{ext}"
            if candidate.exists():
                return candidate
        raise MANOFileError(f"{path}: no MANO_{side.upper()}.pkl or MANO_{side.upper()}.npz in this folder")
    if not path.exists():
        raise MANOFileError(f"{path}: MANO model file not found")
    return path


def check_mano_path(mano_path: str | os.PathLike) -> None:
    """Read and validate the right and left models of ``model.mano_path`` (left hands' ground truth needs the left
    one), so that a missing or foreign file is refused before any data is read: a :class:`MANOFileError` naming the
    key and the file. "" (the synthetic hand) passes."""
    if str(mano_path) == "":
        return
    try:
        for side in ("right", "left"):
            load_model_file(model_path(mano_path, side))
    except MANOFileError as err:
        raise MANOFileError(f"model.mano_path: {err}") from None


def _check_side(side: str) -> None:
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")


@dataclass
class ManoOutput:
    vertices: torch.Tensor  # (..., 778, 3) metres
    joints: torch.Tensor  # (..., 21, 3) metres, MANO-21 order


class Mano(torch.nn.Module):
    """``smplx.MANO`` (45-D axis-angle hand pose relative to the mean pose) with 21 joints, fp32 inside.

    ``Mano(model, side)``: ``model`` is a dict of MANO arrays, a model file or folder, or "" for the synthetic
    hand. Attributes: ``faces`` (long buffer ``(1538, 3)``, not saved in state dicts), ``side``.
    """

    def __init__(self, model: dict[str, np.ndarray] | str | os.PathLike = "", side: str = "right") -> None:
        super().__init__()
        import smplx  # heavy; keep `import hmh.mano.model` light

        _check_side(side)
        if isinstance(model, dict):
            arrays = validate_model(model, "<MANO arrays>")
        else:
            arrays = load_model_file(model_path(model, side))
        self.side = side
        # smplx prints a note for every model whose shape space is smaller than its own (300; MANO has 10), and
        # Ray Train's patched print sends it to the log past any stdout redirect: zero columns up to that size
        # silence it, and smplx keeps the first num_betas=10 columns, so the model is unchanged.
        shapedirs = arrays["shapedirs"]
        missing = max(0, smplx.MANO.SHAPE_SPACE_DIM - shapedirs.shape[-1])
        padded = np.concatenate([shapedirs, np.zeros((*shapedirs.shape[:2], missing), shapedirs.dtype)], axis=-1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # smplx warns about deprecated APIs
            self.layer = smplx.MANO(
                model_path="", data_struct=smplx.utils.Struct(**dict(arrays, shapedirs=padded)),
                is_rhand=side == "right", use_pca=False,
                flat_hand_mean=False, num_betas=10, batch_size=1, create_global_orient=False,
                create_hand_pose=False, create_betas=False, create_transl=False, create_body_pose=False,
            )  # no parameters: everything is passed to forward
        self.register_buffer("faces", torch.as_tensor(arrays["f"]), persistent=False)

    def forward(
        self,
        global_orient: torch.Tensor,
        hand_pose: torch.Tensor,
        betas: torch.Tensor,
        transl: torch.Tensor | None = None,
    ) -> ManoOutput:
        """``global_orient (..., 3)``, ``hand_pose (..., 45)``, ``betas (..., 10)``, ``transl (..., 3)`` or None.

        Any leading shape (shared by all inputs, empty allowed). Returns vertices ``(..., 778, 3)`` and joints
        ``(..., 21, 3)`` in the dtype of ``global_orient``; computed in fp32 with autocast off.
        """
        lead = global_orient.shape[:-1]
        inputs = {"global_orient": (global_orient, 3), "hand_pose": (hand_pose, 45), "betas": (betas, 10)}
        if transl is not None:
            inputs["transl"] = (transl, 3)
        for name, (value, width) in inputs.items():
            if value.shape != (*lead, width):
                raise ValueError(f"Mano.forward: {name} must have shape {(*lead, width)}, got {tuple(value.shape)}")
        flat = {name: value.reshape(-1, width).float() for name, (value, width) in inputs.items()}  # (N, width)
        n = flat["global_orient"].shape[0]
        dtype = global_orient.dtype
        if n == 0:
            vertices = global_orient.new_zeros((*lead, NUM_VERTS, 3))
            return ManoOutput(vertices=vertices, joints=global_orient.new_zeros((*lead, NUM_JOINTS, 3)))
        with torch.autocast(device_type=global_orient.device.type, enabled=False):
            out = self.layer(**flat)
        vertices = out.vertices  # (N, 778, 3)
        joints = vertices.new_empty((n, NUM_JOINTS, 3))
        joints[:, MANO16_TO_21] = out.joints[:, :16]
        joints[:, _TIP_SLOTS] = vertices[:, list(FINGERTIP_VERTEX_IDS)]
        return ManoOutput(
            vertices=vertices.reshape(*lead, NUM_VERTS, 3).to(dtype),  # (..., 778, 3)
            joints=joints.reshape(*lead, NUM_JOINTS, 3).to(dtype),  # (..., 21, 3)
        )
