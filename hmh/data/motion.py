"""Where the hand is when: smooth 5-keyframe hand motions (a 30 fps clip), their sub-frames, and camera rigs.

A clip is K = 5 keyframes at 30 fps around its middle keyframe (index 2): wrist position and global orientation
follow constant-acceleration paths (rotations composed in the world frame), finger articulation moves along the
MANO pose PCA (``hands_components``). Each clip is drawn from one of a few motion regimes so a dataset holds
both sharp (nearly still) and strongly blurred (fast) images. Sub-frames span exactly keyframe 0 to keyframe 4:
sub-frame ``j`` of F sits at keyframe time ``4 j / (F - 1)`` (F odd, so the middle sub-frame is keyframe 2;
F = 1 is keyframe 2 alone); rotations are slerped between neighbouring keyframes, positions interpolated linearly.

What is drawn from what ranges is a :class:`Distribution`, chosen by name from :data:`PROFILES`:

- ``full`` (the default): the hand's orientation uniform over all rotations, cameras anywhere on a sphere with
  any roll, up to 8 background clutter shapes. The hardest setting: many views are end-on or edge-on.
- ``bench`` (the ``bench`` preset, a benchmark that learns on 2 CPU cores): the hand's orientation within
  ``orientation_spread`` of MANO's rest orientation, every camera within ``camera_spread`` of the palm normal's
  axis (half the rig on the palm side, half on the back) with roll within ``camera_roll``, at most 2 clutter
  shapes. The motion regimes, and with them the blur that hides the direction of motion and the finger pose,
  are those of ``full``.

Units: metres, seconds, radians. World frame: the capture's; a rig's cameras look at its origin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from hmh.geometry import slerp_axis_angle

FPS = 30.0
NUM_KEYFRAMES = 5
MIDDLE = NUM_KEYFRAMES // 2
MAX_COMPONENT_STD = 1.2  # radians; a PCA row's norm is its std (MANO convention), capped for safety

# regime: (probability, wrist speed m/s, angular speed rad/s, PCA coefficient rate in std per second), (lo, hi)
REGIMES = {
    "still": (0.25, (0.0, 0.01), (0.0, 0.05), (0.0, 0.05)),
    "moderate": (0.40, (0.05, 0.35), (0.3, 2.0), (0.3, 3.0)),
    "fast": (0.35, (0.25, 0.9), (1.0, 4.0), (1.0, 7.0)),
}


@dataclass(frozen=True)
class Distribution:
    """The ranges a synthetic dataset's hands, cameras and backgrounds are drawn from (module docstring).

    ``orientation_spread``: the middle keyframe's global orientation is MANO's rest orientation rotated by at most
    this angle (radians) about a random axis; ``None`` = uniform over all rotations. ``camera_axis``: cameras sit
    within ``camera_spread`` (radians) of this world axis, on both sides; ``None`` = anywhere on the sphere.
    ``camera_roll``: the largest roll about the optical axis (radians). ``clutter``: the most background shapes.
    """

    orientation_spread: float | None
    camera_axis: tuple[float, float, float] | None
    camera_spread: float
    camera_roll: float
    clutter: int


# The MANO right hand's palm normal in its rest pose is close to the -y axis (fingers along -x).
PROFILES = {
    "full": Distribution(orientation_spread=None, camera_axis=None, camera_spread=math.pi, camera_roll=math.pi,
                         clutter=8),
    "bench": Distribution(orientation_spread=0.5, camera_axis=(0.0, 1.0, 0.0), camera_spread=0.35, camera_roll=0.5,
                          clutter=2),
}


def profile(name: str) -> Distribution:
    """The :class:`Distribution` named ``name``; a ``ValueError`` naming the known profiles otherwise."""
    if name not in PROFILES:
        raise ValueError(f"unknown synthetic data profile {name!r} (known: {', '.join(PROFILES)})")
    return PROFILES[name]


@dataclass
class Clip:
    """One hand's K = 5 keyframes. Arrays: ``orient (K, 3)`` world axis-angle, ``hand_pose (K, 45)`` relative
    to the MANO mean pose, ``wrist (K, 3)`` world wrist-joint positions relative to the clip's placement, ``betas
    (10,)``."""

    side: str
    regime: str
    betas: np.ndarray
    orient: np.ndarray
    hand_pose: np.ndarray
    wrist: np.ndarray


@dataclass
class Rig:
    """A capture's cameras (InterHand convention, millimetres): ``camrot (C, 3, 3)`` world-to-camera rows,
    ``campos (C, 3)`` camera centres, ``focal (C, 2)``, ``princpt (C, 2)`` pixels; ``names`` C camera ids."""

    names: list[str]
    camrot: np.ndarray
    campos: np.ndarray
    focal: np.ndarray
    princpt: np.ndarray


def keyframe_times() -> np.ndarray:
    """``(K,)`` seconds relative to the middle keyframe."""
    return (np.arange(NUM_KEYFRAMES) - MIDDLE) / FPS


def subframe_times(num_subframes: int) -> np.ndarray:
    """``(F,)`` sub-frame times in keyframe units (0 = keyframe 0, 4 = keyframe 4). F must be odd."""
    if num_subframes < 1 or num_subframes % 2 == 0:
        raise ValueError(f"the number of sub-frames must be odd and positive (middle = current), got {num_subframes}")
    if num_subframes == 1:
        return np.array([float(MIDDLE)])
    return np.linspace(0.0, NUM_KEYFRAMES - 1.0, num_subframes)


def _random_vector(rng: np.random.Generator, magnitude: float, dim: int = 3) -> np.ndarray:
    direction = rng.normal(size=dim)
    return direction / np.linalg.norm(direction) * magnitude


def _middle_orientation(rng: np.random.Generator, spread: float | None) -> Rotation:
    """The middle keyframe's world orientation: uniform (``spread`` None) or within ``spread`` rad of the rest."""
    if spread is None:
        return Rotation.random(random_state=rng)
    return Rotation.from_rotvec(_random_vector(rng, spread * rng.uniform() ** (1.0 / 3.0)))  # uniform in the ball


def sample_clip(rng: np.random.Generator, side: str, hands_components: np.ndarray,
                distribution: Distribution = PROFILES["full"]) -> Clip:
    """Draw one clip. ``hands_components (P, 45)``: MANO pose PCA rows, each a principal direction times its std."""
    names = list(REGIMES)
    regime = names[rng.choice(len(names), p=[REGIMES[n][0] for n in names])]
    _, speed, spin, rate = REGIMES[regime]
    t = keyframe_times()[:, None]  # (K, 1)
    duration = t[-1, 0] - t[0, 0]

    velocity = _random_vector(rng, rng.uniform(*speed))
    accel = _random_vector(rng, rng.uniform(0.0, 1.0) * np.linalg.norm(velocity) / duration)
    wrist = velocity * t + 0.5 * accel * t**2  # (K, 3)

    omega = _random_vector(rng, rng.uniform(*spin))
    alpha = _random_vector(rng, rng.uniform(0.0, 1.0) * np.linalg.norm(omega) / duration)
    delta = Rotation.from_rotvec(omega * t + 0.5 * alpha * t**2)  # K world-frame rotations from the middle
    orient = (delta * _middle_orientation(rng, distribution.orientation_spread)).as_rotvec()  # (K, 3) delta after it

    std = np.minimum(np.linalg.norm(hands_components, axis=1), MAX_COMPONENT_STD)  # (P,) radians per component
    basis = hands_components / np.maximum(np.linalg.norm(hands_components, axis=1, keepdims=True), 1e-12)  # (P, 45)
    coeff_mid = rng.normal(size=len(std))  # in units of each component's std: the prior's own spread
    coeff_rate = _random_vector(rng, rng.uniform(*rate), len(std))  # std units per second
    coeff_accel = _random_vector(rng, rng.uniform(0.0, 1.0) * np.linalg.norm(coeff_rate) / duration, len(std))
    coeffs = coeff_mid + coeff_rate * t + 0.5 * coeff_accel * t**2  # (K, P)
    coeffs = 2.5 * np.tanh(coeffs / 2.5)  # smoothly bounded to 2.5 std: no implausible extremes
    hand_pose = (coeffs * std) @ basis  # (K, 45) relative to the mean pose

    betas = np.clip(rng.normal(size=10) * 0.8, -2.5, 2.5)
    return Clip(side=side, regime=regime, betas=betas, orient=orient, hand_pose=hand_pose, wrist=wrist)


def interpolate(keyframes: np.ndarray, times: np.ndarray, rotation: bool) -> np.ndarray:
    """Piecewise interpolation of ``keyframes (K, ..., 3)`` at ``times (F,)`` in keyframe units -> ``(F, ..., 3)``.

    ``rotation``: the last axis holds axis-angle rotations, slerped (:func:`hmh.geometry.slerp_axis_angle`) between
    neighbouring keyframes; otherwise linear. Times on a keyframe return that keyframe exactly.
    """
    lower = np.clip(np.floor(times).astype(np.int64), 0, len(keyframes) - 2)  # (F,)
    frac = times - lower  # (F,) in [0, 1]
    a, b = keyframes[lower], keyframes[lower + 1]  # (F, ..., 3)
    w = frac.reshape((-1,) + (1,) * (keyframes.ndim - 1))  # (F, 1, ..., 1)
    if rotation:
        out = slerp_axis_angle(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(w[..., 0])).numpy()
    else:
        out = (1.0 - w) * a + w * b
    exact = np.isclose(times, np.round(times), atol=1e-9)
    out[exact] = keyframes[np.round(times[exact]).astype(np.int64)]
    return out


def look_at(campos: np.ndarray, target: np.ndarray, roll: float) -> np.ndarray:
    """World-to-camera rotation ``(3, 3)`` (rows = camera x, y, z axes) of a camera at ``campos`` looking at
    ``target``, rolled by ``roll`` radians about its optical axis; OpenCV axes (+y down in the image)."""
    z = target - campos
    z = z / np.linalg.norm(z)
    helper = np.array([0.0, 0.0, 1.0]) if abs(z[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c, s = np.cos(roll), np.sin(roll)
    return np.stack([c * x + s * y, -s * x + c * y, z])


def _camera_direction(rng: np.random.Generator, index: int, distribution: Distribution) -> np.ndarray:
    """Unit vector from the capture origin to camera ``index``: anywhere, or near ``camera_axis`` on the side
    given by the index's parity (even: +axis, odd: -axis), uniform within ``camera_spread`` of it."""
    if distribution.camera_axis is None:
        return _random_vector(rng, 1.0)
    axis = np.asarray(distribution.camera_axis, dtype=np.float64) * (1.0 if index % 2 == 0 else -1.0)
    cos_angle = rng.uniform(np.cos(distribution.camera_spread), 1.0)  # uniform on the spherical cap
    tilt = _random_vector(rng, 1.0)
    tilt -= tilt @ axis * axis
    tilt /= max(np.linalg.norm(tilt), 1e-12)
    return cos_angle * axis + np.sqrt(1.0 - cos_angle**2) * tilt


def sample_rig(rng: np.random.Generator, num_cameras: int, size: int,
               distribution: Distribution = PROFILES["full"]) -> Rig:
    """Cameras 0.5-0.8 m from the capture origin (placed as ``distribution`` says), looking at it, ``size`` px.

    Focal lengths make a hand span roughly 40-80% of the image; values are rounded as written to the JSON, so
    what is rendered is exactly what the files say.
    """
    names, camrot, campos, focal, princpt = [], [], [], [], []
    for index in range(num_cameras):
        direction = _camera_direction(rng, index, distribution)
        position = direction * rng.uniform(0.5, 0.8)  # metres
        rot = look_at(position, np.zeros(3), rng.uniform(-distribution.camera_roll, distribution.camera_roll))
        f = size * rng.uniform(1.8, 2.6)
        names.append(f"40{index:04d}")
        camrot.append(np.round(rot, 9))
        campos.append(np.round(position * 1000.0, 4))
        focal.append(np.round([f, f * rng.uniform(0.995, 1.005)], 4))
        princpt.append(np.round((size - 1) / 2.0 + rng.normal(0.0, 0.02 * size, 2), 4))
    return Rig(names, np.array(camrot), np.array(campos), np.array(focal), np.array(princpt))
