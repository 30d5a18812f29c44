"""Headless CPU rendering of posed hand meshes: moderngl on EGL (Mesa llvmpipe), many frames per draw.

One call renders ``B`` images of ``F`` frames each (the sub-frames of a motion-blurred image) with one instanced
draw into an atlas (row ``b``, column ``f``; vertices are fetched from a float texture by instance), then a second
pass averages each row's ``F`` tiles on the GPU and only the ``B`` averaged images are read back. Each tile has its
own pinhole camera; ``gl_ClipDistance`` planes keep a mesh inside its tile, so hands may leave their frame.

Conventions (the dataset's): camera-space vertices in metres, OpenCV axes (+x right, +y down, +z forward);
pixel ``(u, v) = (fx x / z + cx, fy y / z + cy)`` with integer coordinates at pixel centres and row 0 at the top.
Faces must wind counter-clockwise seen from outside (:func:`orient_outward`); open boundaries (MANO's wrist) are
capped with a fan, so the mesh is closed and back faces are culled (a third fewer triangles to set up).
Shading (per vertex: llvmpipe's cost grows with the number of interpolated values, and the mesh is dense at these
image sizes): diffuse + a little Blinn-Phong specular from a per-mesh key light, a fill light and ambient, in
linear light, stored as its square root in an 8-bit target (twice as fast to write and to average on llvmpipe as
half floats, and within 0.3% of them); the averaging pass decodes before it sums. Anti-aliasing: optional MSAA
and, cheaper (what the generator uses), sub-pixel jitter of the principal point across the averaged sub-frames
(the accumulation-buffer technique: a pixel then integrates over its area, as a sensor does). Outputs are
premultiplied by alpha (coverage), ready for ``mean_rgb + (1 - mean_alpha) * background`` compositing.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from hmh.data.timing import NO_TIMER, PhaseTimer
from hmh.errors import HmhError

SYSTEM_PACKAGES = ("libegl1", "libegl-mesa0", "libgl1-mesa-dri", "libgl1")
MAX_SIDE = 16384  # GL texture/framebuffer side on llvmpipe
MAX_ATLAS_PIXELS = 4096 * 4096  # per draw; larger atlases stop paying off
MAX_TILES = 1024  # frames per draw: the per-frame uniform block (3 vec4 each) must fit in 64 KiB
NEAR, FAR = 0.02, 20.0  # metres
_GL_CLIP_DISTANCE0 = 0x3000

_VERTEX_SHADER = """
#version 330
layout(std140) uniform Frames {
    vec4 intrinsics[MAX_TILES];  // fx, fy, cx, cy
    vec4 albedo[MAX_TILES];      // linear rgb, specular strength
    vec4 light[MAX_TILES];       // key light direction (towards the light, camera frame), ambient
};
uniform sampler2D positions;  // (frames, vertices) texels: xyz
uniform sampler2D normals;
uniform vec2 atlas;           // width, height in pixels
uniform float tile_size;      // S
uniform int frames_per_image;
uniform vec2 depth;           // clip z = depth.x * z + depth.y
out vec3 v_colour;

void main() {
    int m = gl_InstanceID;
    vec3 pos = texelFetch(positions, ivec2(gl_VertexID, m), 0).xyz;
    vec4 k = intrinsics[m];
    vec2 t = vec2(m % frames_per_image, m / frames_per_image) * tile_size;  // tile corner, from the atlas top
    float z = pos.z;
    // GL window coordinates times z: x_w = t.x + u + 0.5, y_w = H - (t.y + v + 0.5) (GL rows go up)
    float xz = (t.x + k.z + 0.5) * z + k.x * pos.x;
    float yz = (atlas.y - t.y - k.w - 0.5) * z - k.y * pos.y;
    gl_Position = vec4(2.0 * xz / atlas.x - z, 2.0 * yz / atlas.y - z, depth.x * z + depth.y, z);
    // linear in clip coordinates, so clipping is exact: keep (x_w, y_w) inside the tile
    gl_ClipDistance[0] = xz - t.x * z;
    gl_ClipDistance[1] = (t.x + tile_size) * z - xz;
    gl_ClipDistance[2] = yz - (atlas.y - t.y - tile_size) * z;
    gl_ClipDistance[3] = (atlas.y - t.y) * z - yz;
    vec3 n = normalize(texelFetch(normals, ivec2(gl_VertexID, m), 0).xyz);
    vec3 view = normalize(-pos);
    vec4 a = albedo[m];
    vec3 l = normalize(light[m].xyz);
    vec3 fill = normalize(vec3(-l.x, 0.3, -0.6));
    float diffuse = 0.8 * max(dot(n, l), 0.0) + 0.25 * max(dot(n, fill), 0.0);
    float wrap = 0.5 + 0.5 * max(dot(n, view), 0.0);  // soft view-dependent ambient
    float specular = a.w * pow(max(dot(n, normalize(l + view)), 0.0), 24.0);
    v_colour = sqrt(a.rgb * (light[m].w * wrap + diffuse) + vec3(specular));  // 8-bit target: store sqrt
}
"""

_FRAGMENT_SHADER = """
#version 330
in vec3 v_colour;
out vec4 frag;

void main() {
    frag = vec4(v_colour, 1.0);
}
"""

_MEAN_VERTEX_SHADER = """
#version 330
void main() {  // one triangle covering the viewport
    vec2 corner = vec2((gl_VertexID << 1) & 2, gl_VertexID & 2);
    gl_Position = vec4(corner * 2.0 - 1.0, 0.0, 1.0);
}
"""

_MEAN_FRAGMENT_SHADER = """
#version 330
uniform sampler2D frames;  // the atlas: one row of F tiles per image, same rows as the output
uniform int frames_per_image;
uniform int tile_size;
out vec4 mean;

void main() {
    ivec2 p = ivec2(gl_FragCoord.xy);
    vec4 acc = vec4(0.0);
    for (int j = 0; j < frames_per_image; ++j) {
        vec4 t = texelFetch(frames, ivec2(p.x + j * tile_size, p.y), 0);  // sqrt-encoded, premultiplied
        vec3 c = t.rgb / max(t.a, 1e-6);
        acc += vec4(c * c * t.a, t.a);
    }
    mean = acc / float(frames_per_image);
}
"""


class RendererUnavailableError(HmhError):
    """No headless OpenGL (EGL) context could be created."""


@dataclass
class Renders:
    """Rendered images. ``rgb (B, S, S, 3)`` linear light premultiplied by ``alpha (B, S, S)``, float32."""

    rgb: np.ndarray
    alpha: np.ndarray


def create_context():
    """A standalone moderngl context on EGL; raises :class:`RendererUnavailableError` naming what to install."""
    # Load triton (and its LLVM) before Mesa's llvmpipe: with EGL loaded first, a later triton import in this
    # process (torchvision, torch.compile) crashes with a segmentation fault. triton alone takes 0.1 s to import,
    # torchvision (which imports it) 1.3 s: that was most of a generator worker's start-up.
    import moderngl

    with contextlib.suppress(ImportError):  # without triton (CPU-only torch) there is nothing to conflict
        import triton  # noqa: F401

    try:
        return moderngl.create_context(standalone=True, backend="egl", require=330)
    except Exception as err:  # moderngl/glcontext raise plain Exceptions for a missing libEGL or driver
        packages = " ".join(SYSTEM_PACKAGES)
        raise RendererUnavailableError(
            f"cannot create a headless OpenGL context on EGL ({err}); install the system packages {packages} "
            f"(`sudo apt-get install {packages}`, or run scripts/bootstrap.sh)"
        ) from err


def orient_outward(faces: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """``faces (F, 3)`` reordered if needed so they wind counter-clockwise seen from outside ``vertices (V, 3)``.

    Decided by the sign of the enclosed volume (the mesh may have small openings such as MANO's wrist).
    """
    tri = vertices[faces]  # (F, 3, 3)
    volume = np.einsum("fi,fi->", tri[:, 0], np.cross(tri[:, 1], tri[:, 2]))
    return faces if volume > 0 else faces[:, ::-1].copy()


def boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """Loops of boundary edges (edges of exactly one face), each ``(L,)`` vertex ids in the faces' edge direction."""
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])  # (3F, 2)
    _, inverse, counts = np.unique(np.sort(directed, axis=1), axis=0, return_inverse=True, return_counts=True)
    following = dict(directed[counts[inverse.reshape(-1)] == 1].tolist())  # start -> end of each boundary edge
    loops = []
    while following:
        start, nxt = following.popitem()
        loop = [start]
        while nxt != start:
            if nxt not in following:
                raise ValueError(f"mesh boundary is not a set of simple loops (at vertex {nxt})")
            loop.append(nxt)
            nxt = following.pop(nxt)
        loops.append(np.array(loop, dtype=np.int64))
    return loops


def vertex_normals(vertices: np.ndarray, incidence: sparse.csr_matrix, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals. ``vertices (N, V, 3)``, ``incidence (V, F)`` -> ``(N, V, 3)`` float32."""
    n, v, _ = vertices.shape
    x = np.ascontiguousarray(vertices.transpose(1, 0, 2), dtype=np.float32)  # (V, N, 3)
    e1 = x[faces[:, 1]] - x[faces[:, 0]]  # (F, N, 3)
    e2 = x[faces[:, 2]] - x[faces[:, 0]]
    face_n = np.empty_like(e1)  # (F, N, 3) cross product, written out: np.cross is slower here
    face_n[..., 0] = e1[..., 1] * e2[..., 2] - e1[..., 2] * e2[..., 1]
    face_n[..., 1] = e1[..., 2] * e2[..., 0] - e1[..., 0] * e2[..., 2]
    face_n[..., 2] = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]
    normals = (incidence @ face_n.reshape(len(faces), n * 3)).reshape(v, n, 3).transpose(1, 0, 2)  # (N, V, 3)
    return normals / np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12)


class MeshRenderer:
    """Render meshes sharing one face list, each frame through its own pinhole camera, and average sub-frames.

    ``faces (F, 3)`` (counter-clockwise from outside) of meshes with ``num_vertices`` vertices; ``size`` = S;
    ``frames_per_image`` (F): consecutive frames averaged into one image; ``images_per_draw``: atlas capacity in
    images (larger calls are chunked); ``samples``: MSAA samples (0 or 1 = off). A context manager.
    """

    def __init__(
        self,
        faces: np.ndarray,
        num_vertices: int,
        size: int,
        frames_per_image: int = 1,
        images_per_draw: int = 16,
        samples: int = 0,
    ):
        faces = np.asarray(faces, dtype=np.int64)
        if faces.ndim != 2 or faces.shape[1] != 3 or faces.min() < 0 or faces.max() >= num_vertices:
            raise ValueError(f"faces must be (F, 3) ids below {num_vertices}, got shape {faces.shape}")
        if size < 8 or frames_per_image < 1 or frames_per_image * size > MAX_SIDE:
            raise ValueError(
                f"need 8 <= size and 1 <= frames_per_image <= {MAX_SIDE} / size, got {size}, {frames_per_image}"
            )
        self.size, self.num_vertices, self.frames_per_image = size, num_vertices, frames_per_image
        capacity = min(
            MAX_TILES // frames_per_image, MAX_SIDE // size, MAX_ATLAS_PIXELS // (frames_per_image * size**2)
        )
        self.images_per_draw = max(1, min(images_per_draw, capacity))
        self.tiles = self.images_per_draw * frames_per_image
        self.caps = boundary_loops(faces)
        cap_faces = [
            np.stack([np.roll(loop, -1), loop, np.full_like(loop, num_vertices + i)], axis=1)  # (L, 3)
            for i, loop in enumerate(self.caps)
        ]
        self.faces = np.concatenate([faces, *cap_faces])  # (F + caps, 3)
        self.render_vertices = num_vertices + len(self.caps)
        self.incidence = sparse.csr_matrix(
            (np.ones(self.faces.size, np.float32), (self.faces.reshape(-1), np.repeat(np.arange(len(self.faces)), 3))),
            shape=(self.render_vertices, len(self.faces)),
        )  # (V + caps, F + caps)
        atlas = (frames_per_image * size, self.images_per_draw * size)  # (W, H)
        self.ctx = create_context()
        self._build_programs(atlas, samples)

    def _build_programs(self, atlas: tuple[int, int], samples: int) -> None:
        ctx, header = self.ctx, f"#define MAX_TILES {self.tiles}\n"
        self.program = ctx.program(
            vertex_shader=_VERTEX_SHADER.strip().replace("\n", "\n" + header, 1),
            fragment_shader=_FRAGMENT_SHADER.strip(),
        )
        self.program["atlas"].value = tuple(float(x) for x in atlas)
        self.program["tile_size"].value = float(self.size)
        self.program["frames_per_image"].value = self.frames_per_image
        self.program["depth"].value = ((FAR + NEAR) / (FAR - NEAR), -2.0 * FAR * NEAR / (FAR - NEAR))
        self.program["positions"].value = 0
        self.program["normals"].value = 1
        self.program["Frames"].binding = 0
        self.uniforms = ctx.buffer(reserve=3 * 16 * self.tiles)
        self.positions = ctx.texture((self.render_vertices, self.tiles), 3, dtype="f4")
        self.normals = ctx.texture((self.render_vertices, self.tiles), 3, dtype="f4")
        self.vao = ctx.vertex_array(self.program, [], index_buffer=ctx.buffer(self.faces.astype(np.int32).tobytes()))
        self.frames = ctx.texture(atlas, 4, dtype="f1")
        self.frames_fbo = ctx.framebuffer(
            color_attachments=[self.frames], depth_attachment=ctx.depth_renderbuffer(atlas)
        )
        samples = min(samples, ctx.max_samples) if samples > 1 else 0
        self.msaa_fbo = None
        if samples:
            self.msaa_fbo = ctx.framebuffer(
                color_attachments=[ctx.renderbuffer(atlas, 4, samples=samples, dtype="f1")],
                depth_attachment=ctx.depth_renderbuffer(atlas, samples=samples),
            )
        self.mean_program = ctx.program(
            vertex_shader=_MEAN_VERTEX_SHADER.strip(), fragment_shader=_MEAN_FRAGMENT_SHADER.strip()
        )
        self.mean_program["frames"].value = 2
        self.mean_program["frames_per_image"].value = self.frames_per_image
        self.mean_program["tile_size"].value = self.size
        self.mean_vao = ctx.vertex_array(self.mean_program, [])
        self.mean_fbo = ctx.framebuffer(color_attachments=[ctx.renderbuffer((self.size, atlas[1]), 4, dtype="f4")])

    def render(
        self,
        vertices: np.ndarray,
        intrinsics: np.ndarray,
        albedo: np.ndarray,
        light: np.ndarray,
        timer: PhaseTimer = NO_TIMER,
    ) -> Renders:
        """Render ``vertices (N, V, 3)`` (camera frame, metres) with ``intrinsics (N, 4)`` = fx, fy, cx, cy px.

        ``albedo (N, 4)``: linear skin rgb and specular strength; ``light (N, 4)``: key light direction (towards
        the light, camera frame) and ambient level. N must be a multiple of F; returns :class:`Renders` for the
        ``B = N / F`` images, each the mean of its F consecutive frames. ``timer`` laps "rendering" (normals,
        uploads, the draw) and "averaging" (the mean pass and the read back) of each draw.
        """
        vertices = np.asarray(vertices, dtype=np.float32)
        n, f = vertices.shape[0], self.frames_per_image
        if vertices.shape != (n, self.num_vertices, 3) or n % f:
            raise ValueError(
                f"vertices must be (N, {self.num_vertices}, 3) with N a multiple of {f}, got {vertices.shape}"
            )
        per_frame = {"intrinsics": intrinsics, "albedo": albedo, "light": light}
        for name, arr in per_frame.items():
            if np.shape(arr) != (n, 4):
                raise ValueError(f"{name} must be ({n}, 4), got {np.shape(arr)}")
        b = n // f
        rgb = np.empty((b, self.size, self.size, 3), dtype=np.float32)
        alpha = np.empty((b, self.size, self.size), dtype=np.float32)
        for start in range(0, b, self.images_per_draw):
            images = slice(start, min(b, start + self.images_per_draw))
            frames = slice(images.start * f, images.stop * f)
            rgba = self._draw(vertices[frames], *(np.asarray(a[frames], np.float32) for a in per_frame.values()),
                              timer=timer)
            rgb[images], alpha[images] = rgba[..., :3], rgba[..., 3]
            timer.lap("averaging")
        return Renders(rgb=rgb, alpha=alpha)

    def _draw(self, vertices, intrinsics, albedo, light, timer: PhaseTimer) -> np.ndarray:
        """One draw of ``n`` frames, one read of their ``B = n / F`` means ``(B, S, S, 4)``."""
        n, s = len(vertices), self.size
        block = np.zeros((3, self.tiles, 4), dtype=np.float32)  # (uniform array, frame, vec4)
        block[0, :n], block[1, :n], block[2, :n] = intrinsics, albedo, light
        self.uniforms.write(block.tobytes())
        centres = [vertices[:, loop].mean(axis=1) for loop in self.caps]  # each (n, 3)
        closed = np.concatenate([vertices, np.stack(centres, axis=1)], axis=1) if centres else vertices  # (n, V', 3)
        self.positions.write(closed.tobytes(), viewport=(0, 0, self.render_vertices, n))
        normals = vertex_normals(closed, self.incidence, self.faces)  # (n, V', 3)
        self.normals.write(normals.astype(np.float32).tobytes(), viewport=(0, 0, self.render_vertices, n))
        ctx, b = self.ctx, n // self.frames_per_image
        height = self.frames.height
        (self.msaa_fbo or self.frames_fbo).use()
        ctx.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)  # all of it: llvmpipe clears a part (scissored) ~5x slower
        ctx.enable(ctx.DEPTH_TEST | ctx.CULL_FACE)
        for plane in range(4):
            ctx.enable_direct(_GL_CLIP_DISTANCE0 + plane)
        self.uniforms.bind_to_uniform_block(0)
        self.positions.use(0)
        self.normals.use(1)
        self.vao.render(instances=n)
        if self.msaa_fbo is not None:
            ctx.copy_framebuffer(self.frames_fbo, self.msaa_fbo)
        timer.lap("rendering", sync=ctx.finish)
        self.mean_fbo.viewport = (0, height - b * s, s, b * s)
        self.mean_fbo.use()
        ctx.disable(ctx.DEPTH_TEST | ctx.CULL_FACE)
        self.frames.use(2)
        self.mean_vao.render(vertices=3)
        out = np.frombuffer(self.mean_fbo.read(components=4, dtype="f4", viewport=self.mean_fbo.viewport), np.float32)
        return out.reshape(b * s, s, 4)[::-1].reshape(b, s, s, 4)  # row 0 at the top; (B, S, S, 4)

    def close(self) -> None:
        """Release the GL context and everything on it."""
        self.ctx.release()

    def __enter__(self) -> MeshRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
