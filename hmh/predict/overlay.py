"""Pictures of predicted hand meshes, shaded by the data generator's renderer (:class:`hmh.data.render.MeshRenderer`).

- :func:`overlay_image`: the final current-frame mesh over the original photo at full resolution, the past and
  future meshes as translucent ghosts (blue, red) behind it;
- :func:`contact_sheet`: every hypothesis' current-frame mesh over the crop, labelled with its reward and rank;
- :func:`sequence_frames`: past -> current -> future, interpolated, over the crop (a ping-pong loop);
- :func:`turntable_frames`: the final current mesh turning about the vertical axis;
- :func:`side_by_side`: pictures of one size next to each other, each labelled;
- :func:`save_gif`: frames as a looping animated GIF.

Meshes are camera-frame vertices in metres, as the person sees them (a left hand un-mirrored), sharing one
``faces (F, 3)`` list (wound either way: :func:`render_meshes` orients it outwards). A *view* is a picture of a
crop-pixel scene: the model's crop camera ``crop_intrinsics (4,)`` = fx, fy, cx, cy (crop pixels, as the model
sees the crop: mirrored for a left hand) and an axis-aligned affine ``(2, 3)`` from those crop pixels to the
view's pixels (:func:`view_intrinsics`), e.g. ``invert_affine(crop.affine)`` for the photo. Colours are
composited in linear light and stored as sRGB.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from hmh.data.appearance import encode_srgb8, srgb_to_linear
from hmh.data.render import MeshRenderer, Renders, orient_outward
from hmh.eval.metrics import reward_ranks
from hmh.predict.pictures import FRAME_COLOURS, GREY, RANK_COLOURS

__all__ = ["contact_sheet", "crop_view_affine", "overlay_image", "render_meshes", "save_gif", "sequence_frames",
           "side_by_side", "turntable_frames", "unmirror_crop", "view_intrinsics"]

SKIN = (224, 172, 150)  # sRGB of the final mesh
GHOST_OPACITY = 0.45  # of the past and future meshes in the photo overlay
MAX_RENDER_SIDE = 2048  # px; a larger region is rendered at this side and upscaled
REGION_SCALE = 1.6  # side of the rendered photo region / side of the crop box
LIGHT = (-0.3, -0.6, -1.0, 0.35)  # key light towards the camera's upper left (camera frame), ambient


def _albedo(srgb: Sequence[int], specular: float = 0.15) -> np.ndarray:
    """``(4,)`` linear albedo and specular strength of an 8-bit sRGB colour."""
    return np.append(srgb_to_linear(np.asarray(srgb, dtype=np.float64) / 255.0), specular).astype(np.float32)


def view_intrinsics(crop_intrinsics: np.ndarray, affine: np.ndarray, is_left: bool) -> np.ndarray:
    """Intrinsics ``(4,)`` that project the un-mirrored scene into a view of the crop.

    ``affine (2, 3)``: crop pixels -> view pixels, axis-aligned; for a left hand its x scale must be negative
    (the view un-mirrors the crop). Raises ``ValueError`` for a rotating or wrongly mirrored affine.
    """
    (a, b, c), (d, e, f) = np.asarray(affine, dtype=np.float64)
    if abs(b) > 1e-9 * abs(a) or abs(d) > 1e-9 * abs(e) or (a < 0) != is_left or e <= 0:
        raise ValueError(f"view affine must be axis-aligned and mirror x exactly for a left hand, got {affine}")
    fx, fy, cx, cy = np.asarray(crop_intrinsics, dtype=np.float64)
    return np.array([abs(a) * fx, e * fy, a * cx + c, e * cy + f])


def crop_view_affine(size: int, scale: int, is_left: bool) -> np.ndarray:
    """``(2, 3)`` crop pixels -> pixels of the crop un-mirrored and enlarged ``scale`` times (pixel centres kept)."""
    if is_left:  # u -> size - 1 - u, then enlarged
        return np.array([[-scale, 0.0, scale * (size - 0.5) - 0.5], [0.0, scale, 0.5 * scale - 0.5]])
    return np.array([[scale, 0.0, 0.5 * scale - 0.5], [0.0, scale, 0.5 * scale - 0.5]])


def unmirror_crop(crop_image: np.ndarray, is_left: bool) -> np.ndarray:
    """``crop_image (3, S, S)`` as the model saw it -> ``(3, S, S)`` as the person sees it (a left hand's crop
    flipped back: crop pixel ``u -> S - 1 - u``, :func:`crop_view_affine` with scale 1)."""
    return np.ascontiguousarray(crop_image[..., ::-1]) if is_left else crop_image


def _crop_view_image(crop_image: np.ndarray, scale: int, is_left: bool) -> np.ndarray:
    """``crop_image (3, S, S)`` in [0, 1] (mirrored for a left hand) -> ``(S * scale, S * scale, 3)`` uint8 view."""
    pixels = (np.clip(unmirror_crop(crop_image, is_left).transpose(1, 2, 0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    side = pixels.shape[0] * scale
    return np.asarray(Image.fromarray(np.ascontiguousarray(pixels)).resize((side, side), Image.BILINEAR))


def render_meshes(faces: np.ndarray, vertices: np.ndarray, intrinsics: np.ndarray, size: int,
                  colours: Sequence[Sequence[int]]) -> Renders:
    """``vertices (N, V, 3)`` each through its ``intrinsics (N, 4)`` into ``size``-pixel squares, ``colours``
    one sRGB triple per mesh; 4x MSAA. Raises :class:`hmh.data.render.RendererUnavailableError` without EGL."""
    vertices = np.asarray(vertices, dtype=np.float32)
    faces = orient_outward(np.asarray(faces, dtype=np.int64), vertices[0])
    albedo = np.stack([_albedo(c) for c in colours])  # (N, 4)
    light = np.tile(np.asarray(LIGHT, np.float32), (len(vertices), 1))  # (N, 4)
    with MeshRenderer(faces, vertices.shape[1], size, images_per_draw=len(vertices), samples=4) as renderer:
        return renderer.render(vertices, np.asarray(intrinsics, np.float32), albedo, light)


def _composite(background: np.ndarray, renders: Renders, opacities: Sequence[float]) -> np.ndarray:
    """``background (S, S, 3)`` uint8 sRGB under each render in turn (the last on top) -> uint8 sRGB."""
    linear = srgb_to_linear(background.astype(np.float32) / 255.0)
    for rgb, alpha, opacity in zip(renders.rgb, renders.alpha, opacities, strict=True):
        linear = opacity * rgb + (1.0 - opacity * alpha[..., None]) * linear
    return encode_srgb8(linear)


def overlay_image(photo: Image.Image, faces: np.ndarray, vertices: np.ndarray, crop_intrinsics: np.ndarray,
                  crop_to_image: np.ndarray, box: np.ndarray, is_left: bool) -> Image.Image:
    """The photo with the final meshes drawn over it at its full resolution.

    ``vertices (3, V, 3)``: past, current, future (camera frame, translation included); ``crop_to_image (2, 3)``
    the crop -> photo affine; ``box (4,)`` the crop box ``(x, y, w, h)`` in photo pixels: a square region of
    :data:`REGION_SCALE` times its side about its centre is rendered (at most :data:`MAX_RENDER_SIDE` pixels a
    side, upscaled beyond) and pasted over the photo; mesh parts outside that region are not drawn.
    """
    photo = photo.convert("RGB")
    side = max(8, int(np.ceil(REGION_SCALE * max(box[2], box[3]))))
    x0 = int(np.floor(box[0] + 0.5 * box[2] - 0.5 * side))
    y0 = int(np.floor(box[1] + 0.5 * box[3] - 0.5 * side))
    size = min(side, MAX_RENDER_SIDE)
    r = size / side  # render pixels per photo pixel
    to_region = np.array([[r, 0.0, r * (0.5 - x0) - 0.5], [0.0, r, r * (0.5 - y0) - 0.5], [0.0, 0.0, 1.0]])
    affine = (to_region @ np.vstack([crop_to_image, [0.0, 0.0, 1.0]]))[:2]  # crop px -> region render px
    intrinsics = np.tile(view_intrinsics(crop_intrinsics, affine, is_left), (3, 1))  # (3, 4)
    order = [0, 2, 1]  # past and future ghosts first, the current mesh on top
    renders = render_meshes(faces, np.asarray(vertices)[order], intrinsics, size,
                            [FRAME_COLOURS[0], FRAME_COLOURS[2], SKIN])
    region = Image.new("RGB", (side, side))
    region.paste(photo, (-x0, -y0))
    background = np.asarray(region.resize((size, size), Image.BILINEAR)) if size != side else np.asarray(region)
    drawn = Image.fromarray(_composite(background, renders, [GHOST_OPACITY, GHOST_OPACITY, 1.0]))
    coverage = Image.fromarray((np.clip(renders.alpha.max(axis=0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    if size != side:
        drawn, coverage = drawn.resize((side, side), Image.BILINEAR), coverage.resize((side, side), Image.BILINEAR)
    out = photo.copy()
    out.paste(drawn, (x0, y0), coverage)  # only where a mesh is: the photo elsewhere stays byte for byte
    return out


def contact_sheet(crop_image: np.ndarray, faces: np.ndarray, vertices: np.ndarray, crop_intrinsics: np.ndarray,
                  is_left: bool, reward: np.ndarray | None, selected: Sequence[int], scale: int = 2,
                  columns: int = 4) -> Image.Image:
    """Every hypothesis' current-frame mesh over the (un-mirrored, enlarged) crop, one tile each, labelled
    ``#k``, its reward and rank (0 = highest reward); the selected ones in the rank colours of
    :mod:`hmh.predict.pictures`, the others grey. ``crop_image (3, S, S)`` in [0, 1] as the model saw it;
    ``vertices (K, V, 3)`` camera frame; ``reward (K,)`` or None (a generation-stage checkpoint)."""
    k, size = len(vertices), crop_image.shape[-1] * scale
    intrinsics = np.tile(view_intrinsics(crop_intrinsics, crop_view_affine(crop_image.shape[-1], scale, is_left),
                                         is_left), (k, 1))
    chosen = list(selected)
    colours = [RANK_COLOURS[chosen.index(i) % len(RANK_COLOURS)] if i in chosen else GREY for i in range(k)]
    renders = render_meshes(faces, vertices, intrinsics, size, colours)
    background = _crop_view_image(crop_image, scale, is_left)
    rank = None if reward is None else reward_ranks(reward)
    columns = max(1, min(columns, k))
    sheet = Image.new("RGB", (columns * size, -(-k // columns) * size), (0, 0, 0))
    for i in range(k):
        tile = Image.fromarray(_composite(background, Renders(renders.rgb[i:i + 1], renders.alpha[i:i + 1]), [1.0]))
        label = f"#{i}" + ("" if reward is None else f" r={reward[i]:.3f} rank {rank[i]}") + (" *" if i in chosen
                                                                                                else "")
        draw = ImageDraw.Draw(tile)
        draw.rectangle([0, 0, size, 12], fill=(0, 0, 0))
        draw.text((2, 1), label, fill=colours[i])
        sheet.paste(tile, ((i % columns) * size, (i // columns) * size))
    return sheet


def sequence_frames(crop_image: np.ndarray, faces: np.ndarray, vertices: np.ndarray, crop_intrinsics: np.ndarray,
                    is_left: bool, steps: int = 6, scale: int = 2) -> list[Image.Image]:
    """The final sequence over the crop: ``vertices (3, V, 3)`` past, current, future (camera frame), linearly
    interpolated with ``steps`` frames per segment, forwards then back: ``4 * steps`` frames, ready to loop."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    vertices = np.asarray(vertices, dtype=np.float64)
    t = np.linspace(0.0, 2.0, 2 * steps + 1)  # (N,) 0 = past, 1 = current, 2 = future
    low = np.minimum(t.astype(np.int64), 1)
    w = (t - low)[:, None, None]
    path = (1.0 - w) * vertices[low] + w * vertices[low + 1]  # (N, V, 3)
    loop = np.concatenate([path, path[-2:0:-1]])  # (4 * steps, V, 3)
    size = crop_image.shape[-1] * scale
    intrinsics = view_intrinsics(crop_intrinsics, crop_view_affine(crop_image.shape[-1], scale, is_left), is_left)
    renders = render_meshes(faces, loop, np.tile(intrinsics, (len(loop), 1)), size, [SKIN] * len(loop))
    background = _crop_view_image(crop_image, scale, is_left)
    return [Image.fromarray(_composite(background, Renders(renders.rgb[i:i + 1], renders.alpha[i:i + 1]), [1.0]))
            for i in range(len(loop))]


def turntable_frames(faces: np.ndarray, vertices: np.ndarray, frames: int = 24, size: int = 256,
                     distance: float = 0.5) -> list[Image.Image]:
    """``vertices (V, 3)`` turned about the vertical axis through their centre in ``frames`` steps of
    ``360 / frames`` degrees, seen from ``distance`` metres on a dark background, the hand filling ~70% of it."""
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    centred = np.asarray(vertices, dtype=np.float64) - np.asarray(vertices).mean(axis=0)  # (V, 3)
    radius = max(float(np.linalg.norm(centred, axis=1).max()), 1e-6)
    angles = np.linspace(0.0, 2.0 * np.pi, frames, endpoint=False)
    cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]
    x, y, z = centred[None, :, 0], centred[None, :, 1], centred[None, :, 2]
    turned = np.stack([cos * x + sin * z, np.broadcast_to(y, cos.shape[:1] + y.shape[1:]), -sin * x + cos * z],
                      axis=-1)  # (N, V, 3)
    turned[..., 2] += distance
    focal = 0.35 * size * (distance - radius) / radius
    intrinsics = np.tile([focal, focal, (size - 1) / 2.0, (size - 1) / 2.0], (frames, 1))
    renders = render_meshes(faces, turned, intrinsics, size, [SKIN] * frames)
    background = np.full((size, size, 3), 40, dtype=np.uint8)
    return [Image.fromarray(_composite(background, Renders(renders.rgb[i:i + 1], renders.alpha[i:i + 1]), [1.0]))
            for i in range(frames)]


def side_by_side(pictures: Sequence[Image.Image], labels: Sequence[str]) -> Image.Image:
    """``pictures`` left to right on one canvas (as wide as all, as high as the highest), each with its label in
    a black strip over its top edge."""
    canvas = Image.new("RGB", (sum(p.width for p in pictures), max(p.height for p in pictures)), (0, 0, 0))
    x = 0
    for picture, label in zip(pictures, labels, strict=True):
        tile = picture.convert("RGB")
        draw = ImageDraw.Draw(tile)
        draw.rectangle([0, 0, tile.width, 12], fill=(0, 0, 0))
        draw.text((2, 1), label, fill=(255, 255, 255))
        canvas.paste(tile, (x, 0))
        x += tile.width
    return canvas


def save_gif(path, frames: Sequence[Image.Image], fps: float = 12.0) -> None:
    """``frames`` as a looping animated GIF at ``fps`` (an adaptive palette per frame)."""
    first, *rest = [f.convert("P", palette=Image.ADAPTIVE) for f in frames]
    first.save(path, format="GIF", save_all=True, append_images=rest, duration=int(round(1000.0 / fps)), loop=0,
               disposal=1)
