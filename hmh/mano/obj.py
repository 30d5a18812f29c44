"""Wavefront OBJ meshes: vertices and triangles, written atomically."""

from __future__ import annotations

import os

import numpy as np

from hmh.files import atomic

__all__ = ["write_obj"]


def write_obj(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray, comment: str = "") -> None:
    """Write ``vertices (V, 3)`` and 0-based triangles ``faces (F, 3)`` to ``path`` (a ``# comment`` line first)."""
    vertices, faces = np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"write_obj: expected vertices (V, 3) and faces (F, 3), got {vertices.shape} and "
                         f"{faces.shape}")
    lines = [f"# {comment}"] if comment else []
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices.tolist()]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces.tolist()]
    atomic.write_text(path, "\n".join(lines) + "\n")
