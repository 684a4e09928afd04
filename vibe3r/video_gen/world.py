"""Procedural rooms: shell with doors and windows, furniture, clutter, materials, lights, free space.

World frame: **z-up, floor at z = 0**, the room's footprint is ``[0, Lx] x [0, Ly]`` and its ceiling
at ``z = H``. Everything is built from boxes, cylinders and spheres (open3d triangle meshes), each a
:class:`Part` with a :class:`Material` and a *texture frame* (local -> world rigid transform) in which
the texture is laid out with a physical size in metres, so texel density is world-scale.

* shell: floor, ceiling, four walls (thin boxes outside the footprint) with door and window
  openings; a door opens onto a short unlit corridor (dark, in shadow), a window onto an emissive
  "outdoor" enclosure; skirting boards, window frames and sills, ceiling lamp fixtures.
* furniture (``WorldConfig.objects``): tables, desks, bookcases with books, cabinets with doors and
  handles, sofas, chairs, crates, plants; against a wall or free-standing, never intersecting
  (separating-axis test on oriented footprints), never in front of a door.
* wall decor: posters, pictures, whiteboards (printed textures).
* clutter (``WorldConfig.clutter``): books and stacks, boxes, cups and bottles, balls, monitors, on
  the support surfaces of furniture and on the floor.

:class:`Scene` keeps the camera obstacles (oriented boxes) to place a motion path in free space:
:meth:`Scene.fit_trajectory` / :meth:`Scene.place_trajectory`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import open3d as o3d

from vibe3r.config import WorldConfig
from vibe3r.errors import InputError
from vibe3r.video_gen import textures as tx

#: camera orientation of the motion language's canonical start: at the origin looking along +x,
#: level (OpenCV axes: x right = -y world, y down = -z world, z forward = +x world).
R_START = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])

FLAT, SPHERE, CYLINDER = 0, 1, 2  # how a part's shading normal is obtained

#: part names (before any "-") that make up the room itself rather than things in it
SHELL = {"floor", "ceiling", "wall0", "wall1", "wall2", "wall3", "corridor", "outdoor", "ground", "sky", "skirting"}


def rot_z(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def pose(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


@dataclass
class Material:
    """Surface appearance. Colours are linear RGB.

    ``albedo = tint * texture(u, v) * (1 + detail * (2 grime - 1))`` where ``grime`` is a shared
    1/f noise texture at an incommensurate scale (breaks the exact periodicity of tiled textures).
    Shading: Lambert + ``specular`` * Blinn-Phong lobe of exponent ``shininess``; ``emission > 0``
    makes the surface a light source seen as ``emission * albedo`` (windows' outdoor view, lamps).
    """

    name: str
    tex: int
    tile: float
    tint: np.ndarray
    specular: float = 0.0
    shininess: float = 20.0
    emission: float = 0.0
    detail: float = 0.15


@dataclass
class Part:
    """One ray-castable mesh. ``frame`` maps texture-local to world coordinates.

    Texture coordinate along local axis k: ``c_k = (p_local_k + tex_offset_k) / tex_scale_k``
    (one texture repeat per ``tex_scale`` metres); for face-mapped prints ``tex_scale`` is the
    box size and ``tex_offset`` half of it, so the print covers each face exactly once.
    """

    mesh: o3d.geometry.TriangleMesh
    material: int
    frame: np.ndarray
    tex_scale: np.ndarray
    tex_offset: np.ndarray
    normal_kind: int = FLAT
    name: str = ""


@dataclass
class Light:
    """A ceiling lamp: a horizontal disc of ``radius`` (soft shadows) emitting mostly downwards.

    Radiant intensity towards unit direction ω is ``intensity · (1 - down + down · max(0, -ω_z))``
    (``down`` = 0: isotropic bulb; 1: Lambertian downlight that leaves the ceiling dark);
    ``intensity`` is the irradiance at 1 m straight below.
    """

    pos: np.ndarray
    colour: np.ndarray
    intensity: float
    radius: float = 0.05
    down: float = 0.75


@dataclass
class Obstacle:
    """An oriented box (yaw about z) the camera must keep clear of."""

    centre: np.ndarray
    yaw: float
    half: np.ndarray
    name: str = ""

    def footprint(self) -> np.ndarray:
        """(4, 2) corners of the footprint in world xy."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        hx, hy = self.half[:2]
        loc = np.array([[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]])
        return loc @ np.array([[c, s], [-s, c]]) + self.centre[:2]


@dataclass
class Opening:
    wall: int  # 0: y=0, 1: y=Ly, 2: x=0, 3: x=Lx
    a: float  # along-wall interval [a, b] (m, along x for walls 0/1, along y for 2/3)
    b: float
    z0: float
    z1: float
    kind: str  # "door" | "window"


@dataclass
class Scene:
    """A procedural room ready for ray casting.

    Attributes: ``size = (Lx, Ly, H)``; ``parts`` (geometry id == index), ``materials``,
    ``textures`` (:class:`~vibe3r.video_gen.textures.TextureBank`), ``lights``, ``ambient`` (linear
    RGB irradiance of the bounce term), ``obstacles`` for camera placement, ``grime_tex`` (the
    detail-noise texture index), ``seed``.
    """

    size: tuple[float, float, float]
    parts: list[Part]
    materials: list[Material]
    textures: tx.TextureBank
    lights: list[Light]
    ambient: np.ndarray
    obstacles: list[Obstacle]
    openings: list[Opening]
    grime_tex: int
    seed: int
    _rc: Any = field(default=None, repr=False)
    _arrays: dict[str, np.ndarray] | None = field(default=None, repr=False)

    # ---------------------------------------------------------------- ray casting
    @property
    def raycaster(self) -> o3d.t.geometry.RaycastingScene:
        """The open3d raycasting scene (built once); geometry id i is ``parts[i]``."""
        if self._rc is None:
            rc = o3d.t.geometry.RaycastingScene()
            for i, p in enumerate(self.parts):
                gid = rc.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(p.mesh))
                assert gid == i
            self._rc = rc
        return self._rc

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """Per-geometry and per-material lookup tables used by the renderer."""
        if self._arrays is None:
            G = len(self.parts)
            w2l = np.stack([np.linalg.inv(p.frame) for p in self.parts]) if G else np.zeros((0, 4, 4))
            self._arrays = {
                "geo_mat": np.array([p.material for p in self.parts], np.int64),
                "geo_R": w2l[:, :3, :3].astype(np.float32),  # world -> local rotation
                "geo_t": w2l[:, :3, 3].astype(np.float32),
                "geo_scale": np.stack([p.tex_scale for p in self.parts]).astype(np.float32),
                "geo_offset": np.stack([p.tex_offset for p in self.parts]).astype(np.float32),
                "geo_normal": np.array([p.normal_kind for p in self.parts], np.int64),
                "geo_shell": np.array([p.name.split("-")[0] in SHELL for p in self.parts], bool),
                "mat_tex": np.array([m.tex for m in self.materials], np.int64),
                "mat_tint": np.stack([m.tint for m in self.materials]).astype(np.float32),
                "mat_spec": np.array([m.specular for m in self.materials], np.float32),
                "mat_shin": np.array([m.shininess for m in self.materials], np.float32),
                "mat_emit": np.array([m.emission for m in self.materials], np.float32),
                "mat_detail": np.array([m.detail for m in self.materials], np.float32),
            }
        return self._arrays

    def cast(self, origins: np.ndarray, dirs: np.ndarray) -> dict[str, np.ndarray]:
        """Cast rays (M,3)+(M,3) -> open3d results as numpy (t_hit is inf on a miss)."""
        rays = np.concatenate([origins, dirs], -1).astype(np.float32)
        res = self.raycaster.cast_rays(o3d.core.Tensor(rays))
        return {k: v.numpy() for k, v in res.items()}

    # ---------------------------------------------------------------- free space
    def free_mask(self, points: np.ndarray, clearance: float) -> np.ndarray:
        """(M,) True where a camera centre is ≥ ``clearance`` inside the room and outside obstacles."""
        P = np.asarray(points, np.float64).reshape(-1, 3)
        Lx, Ly, H = self.size
        ok = (
            (P[:, 0] >= clearance) & (P[:, 0] <= Lx - clearance)
            & (P[:, 1] >= clearance) & (P[:, 1] <= Ly - clearance)
            & (P[:, 2] >= clearance) & (P[:, 2] <= H - clearance)
        )
        for ob in self.obstacles:
            c, s = math.cos(ob.yaw), math.sin(ob.yaw)
            d = P - ob.centre
            lx = c * d[:, 0] + s * d[:, 1]
            ly = -s * d[:, 0] + c * d[:, 1]
            inside = (
                (np.abs(lx) <= ob.half[0] + clearance)
                & (np.abs(ly) <= ob.half[1] + clearance)
                & (np.abs(d[:, 2]) <= ob.half[2] + clearance)
            )
            ok &= ~inside
        return ok

    def fit_trajectory(
        self,
        program_or_extent: Any,
        rng: np.random.Generator,
        clearance: float = 0.3,
        height: tuple[float, float] = (1.2, 1.7),
        min_scale: float = 0.4,
        seed: int = 0,
        tries: int = 400,
    ) -> tuple[np.ndarray, float]:
        """Place a motion path in free space: ``(start_c2w (4,4), scale)``.

        ``program_or_extent`` is a ``MotionProgram`` or the (N,3) camera centres of the path for
        the canonical start (origin, looking +x, level, z-up; ``MotionProgram.extent``). The start
        is level at a height drawn from ``height`` (a person holding a phone), with a random yaw ψ
        and position p: camera centres ``Rz(ψ) · scale · extent + p`` must all be
        :meth:`free_mask`-free. Among valid placements the one with the best views is taken
        (:meth:`_view_scores`: things rather than bare walls, not too close, not out of a window;
        for a program every frame's orientation is known, for a bare extent the start's is used).
        If nothing fits, the path is shrunk about its start (scale 1, 0.85, 0.7, ... down to
        ``min_scale``); below that an ``InputError`` is raised.
        """
        if hasattr(program_or_extent, "trajectory"):
            canon = program_or_extent.trajectory(pose(R_START, np.zeros(3)), np.eye(3), 1, 1, seed=seed).c2w
            ext, Rf = canon[:, :3, 3], canon[:, :3, :3]
        else:
            ext = np.asarray(program_or_extent, np.float64).reshape(-1, 3)
            Rf = np.repeat(R_START[None], len(ext), 0)  # orientation unknown: assume the start's
        ext = ext - ext[0]
        sub = np.unique(np.linspace(0, len(Rf) - 1, min(len(Rf), 8)).round().astype(int))
        Lx, Ly, H = self.size
        scale = 1.0
        while scale >= min_scale - 1e-9:
            yaw = rng.uniform(0, 2 * math.pi, tries)
            z = rng.uniform(*height, tries)
            z = np.minimum(z, H - clearance - 0.05)
            p = np.stack([rng.uniform(clearance, Lx - clearance, tries), rng.uniform(clearance, Ly - clearance, tries), z], -1)
            c, s = np.cos(yaw), np.sin(yaw)
            Rz = np.zeros((tries, 3, 3))
            Rz[:, 0, 0], Rz[:, 0, 1], Rz[:, 1, 0], Rz[:, 1, 1], Rz[:, 2, 2] = c, -s, s, c, 1
            pts = np.einsum("cij,nj->cni", Rz, scale * ext) + p[:, None]  # C,N,3
            ok = self.free_mask(pts.reshape(-1, 3), clearance).reshape(tries, -1).all(1)
            idx = np.flatnonzero(ok)[:48]
            if len(idx):
                score = self._view_scores(pts[idx][:, sub], np.einsum("cij,njk->cnik", Rz[idx], Rf[sub]))
                good = np.flatnonzero(score >= score.max() - 0.15)  # good views, not always the single best
                k = int(idx[good[int(rng.integers(len(good)))]])
                return pose(Rz[k] @ R_START, p[k]), scale
            scale = round(scale - 0.15, 6)
        span = ext.max(0) - ext.min(0)
        raise InputError(
            f"motion path ({span[0]:.1f} x {span[1]:.1f} x {span[2]:.1f} m) does not fit in room "
            f"{Lx:.1f} x {Ly:.1f} x {H:.1f} m (seed {self.seed}) even shrunk to {min_scale:g}x; "
            "use a smaller motion or another scene seed"
        )

    def view_content(self, eyes: np.ndarray, R: np.ndarray) -> dict[str, np.ndarray]:
        """What cameras see, from a 5x4 grid of rays over a ~50x35° field of view.

        ``eyes`` (..., 3) camera centres, ``R`` (..., 3, 3) camera-to-world rotations (OpenCV axes).
        Returns ``thing`` (...): fraction of rays hitting objects rather than the room shell
        (:data:`SHELL`: walls, floor, ceiling, skirting, what is seen through openings) -- 0 for a bare
        wall, floor or ceiling; ``out`` (...): fraction leaving the room through windows and doors;
        ``depth`` (..., 20): hit distances in m (1 m for rays leaving the room); ``thing_rays`` and
        ``out_rays`` (..., 20) the per-ray booleans.
        """
        eyes, R = np.asarray(eyes, np.float64), np.asarray(R, np.float64)
        u, v = np.meshgrid(np.linspace(-0.45, 0.45, 5), np.linspace(-0.3, 0.3, 4))
        d_cam = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], -1)  # G,3
        d = np.einsum("...ij,gj->...gi", R, d_cam)  # ...,G,3
        o = np.broadcast_to(eyes[..., None, :], d.shape)
        hit = self.cast(o.reshape(-1, 3), d.reshape(-1, 3))
        t = np.minimum(hit["t_hit"], 100.0)
        q = o.reshape(-1, 3) + t[:, None] * d.reshape(-1, 3)
        Lx, Ly, H = self.size
        out = ~((q[:, 0] > -0.2) & (q[:, 0] < Lx + 0.2) & (q[:, 1] > -0.2) & (q[:, 1] < Ly + 0.2))
        gid = np.minimum(hit["geometry_ids"].astype(np.int64), len(self.parts) - 1)
        thing = ~self.arrays["geo_shell"][gid] & ~out
        shape = d.shape[:-1]  # ...,G
        return {
            "thing": thing.reshape(shape).mean(-1),
            "out": out.reshape(shape).mean(-1),
            "depth": np.where(out, 1.0, t).reshape(shape),
            "thing_rays": thing.reshape(shape),
            "out_rays": out.reshape(shape),
        }

    def _view_scores(self, eyes: np.ndarray, R: np.ndarray) -> np.ndarray:
        """Score candidate paths: eyes (C,F,3), camera rotations (C,F,3,3) -> (C,).

        From :meth:`view_content` of every frame: score = min(0.6, fraction of rays hitting objects
        rather than the room shell) + 0.3 · min(1, 20th-percentile depth / 1.5 m), minus the
        fraction of rays leaving the room through windows and doors (all pooled over the frames).
        """
        C = eyes.shape[0]
        vc = self.view_content(eyes, R)
        depth = vc["depth"].reshape(C, -1)
        thing, out = vc["thing_rays"].reshape(C, -1), vc["out_rays"].reshape(C, -1)
        return np.minimum(0.6, thing.mean(1)) + 0.3 * np.minimum(1.0, np.quantile(depth, 0.2, axis=1) / 1.5) - out.mean(1)

    def place_trajectory(self, program_or_extent: Any, rng: np.random.Generator, clearance: float = 0.3,
                         height: tuple[float, float] = (1.2, 1.7), seed: int = 0) -> np.ndarray:
        """Start pose (4,4) placing the path at full size in free space; ``InputError`` if it does not fit."""
        start, _ = self.fit_trajectory(program_or_extent, rng, clearance, height, min_scale=1.0, seed=seed)
        return start


# ============================================================================================
# building
# ============================================================================================


def _box_mesh(size: np.ndarray) -> o3d.geometry.TriangleMesh:
    m = o3d.geometry.TriangleMesh.create_box(float(size[0]), float(size[1]), float(size[2]))
    m.translate(-np.asarray(size, np.float64) / 2)
    return m


class _Builder:
    """Accumulates parts, materials and textures of one scene."""

    def __init__(self, seed: int, cfg: WorldConfig):
        self.cfg = cfg
        self.seed = seed
        self.rng = np.random.default_rng([seed, 7])
        self.R = cfg.texture_res
        self.tex_images: list[np.ndarray] = []
        self.tex_mirror: list[bool] = []
        self.tex_names: list[str] = []
        self.materials: list[Material] = []
        self.parts: list[Part] = []
        self.obstacles: list[Obstacle] = []
        self.image_files = tx.find_images(cfg.texture_dirs) if cfg.texture_dirs else []
        self.grime = self.texture("grime")

    # ---------------------------------------------------------------- textures, materials
    def texture(self, kind: str, **kw: Any) -> int:
        g = np.random.default_rng([self.seed, 11, len(self.tex_images)])
        mirror = False
        if kind == "grime":
            n = tx.pink_noise(self.R, g, 1.0, fmin=1)  # stored so that its *linear* value is 0.5 + n/6
            img = np.repeat(tx.linear_to_srgb(0.5 + 0.5 * np.clip(n / 3, -1, 1))[..., None], 3, -1)
        elif kind == "image":
            img, mirror = tx.image_crop(self.R, g, self.image_files), True
        elif kind == "neutral":
            img = tx.plastic(self.R, g, base=np.full(3, 0.8))
        elif kind in ("poster", "keys", "rug"):  # printed once per face: mirror addressing clamps the borders
            img, mirror = tx.GENERATORS[kind](self.R, g), True
        else:
            img = tx.GENERATORS[kind](self.R, g, **kw)
        self.tex_images.append(np.asarray(img, np.float32))
        self.tex_mirror.append(mirror)
        self.tex_names.append(kind)
        return len(self.tex_images) - 1

    #: at most this many distinct textures of a kind per scene; further materials reuse one (with
    #: their own tint), which keeps scene building fast without visible repetition.
    QUOTA = {"neutral": 2, "poster": 10, "image": 12, "plastic": 2, "metal": 2, "fabric": 4, "wood": 4, "cardboard": 3, "foliage": 2,
             "dead_leaves": 2, "paint": 4}

    def material(self, kind: str, tile: float, tint: np.ndarray | None = None, specular: float = 0.0,
                 shininess: float = 20.0, emission: float = 0.0, detail: float = 0.15, image_ok: bool = False,
                 **kw: Any) -> int:
        """A new material; ``image_ok`` lets a photo crop replace the procedural texture.

        Textures of a kind beyond ``QUOTA`` (and without colour arguments) are reused.
        """
        if image_ok and self.image_files and self.rng.random() < self.cfg.image_texture_prob:
            kind, kw = "image", {}
        same = [i for i, n in enumerate(self.tex_names) if n == kind]
        if not kw and len(same) >= self.QUOTA.get(kind, 10**9):
            tex = same[int(self.rng.integers(len(same)))]
        else:
            tex = self.texture(kind, **kw)
        tint = np.ones(3) if tint is None else tint
        self.materials.append(Material(kind, tex, float(tile), np.asarray(tint, np.float32), specular, shininess,
                                       emission, detail))
        return len(self.materials) - 1

    def plain(self, srgb: np.ndarray, tile: float = 0.5, specular: float = 0.05) -> int:
        """Painted/plastic material of a given sRGB colour: a shared neutral texture, tinted."""
        grey = np.full(3, 0.8)
        tint = tx.srgb_to_linear(np.asarray(srgb, np.float64)) / tx.srgb_to_linear(grey)
        return self.material("neutral", tile, tint=tint, specular=specular)

    # ---------------------------------------------------------------- geometry
    def _add(self, mesh: o3d.geometry.TriangleMesh, mat: int, frame: np.ndarray, scale: np.ndarray,
             offset: np.ndarray | None, kind: int, name: str) -> None:
        if offset is None:
            offset = self.rng.uniform(0, 10, 3)
        self.parts.append(Part(mesh, mat, frame, np.asarray(scale, np.float64), np.asarray(offset, np.float64), kind, name))

    def box(self, centre: np.ndarray, size: np.ndarray, mat: int, yaw: float = 0.0, frame: np.ndarray | None = None,
            face: bool = False, name: str = "box", tilt: float = 0.0, crop: bool = False) -> None:
        """Box of ``size`` in its own frame ``Rz(yaw) Rx(tilt)`` about ``centre``.

        ``face=True`` maps the texture once per face (prints); otherwise it repeats every
        ``material.tile`` metres in ``frame`` (default: the box's own frame). ``crop=True`` maps a
        random sub-window (35-90 % per axis) of the print instead of all of it, so items sharing a
        print (books, papers, boxes) still look different.
        """
        size = np.asarray(size, np.float64)
        R = rot_z(yaw) @ rot_x(tilt)
        m = _box_mesh(size)
        m.rotate(R, center=np.zeros(3))
        m.translate(np.asarray(centre, np.float64))
        own = pose(R, np.asarray(centre, np.float64))
        if face:
            f = self.rng.uniform(0.35, 0.9, 3) if crop else np.ones(3)
            off = self.rng.uniform(0, 1, 3) * (1 - f)
            # c = (p + size/2) / size in [0,1] -> off + f c  <=>  scale = size / f, offset = size/2 + off size / f
            self._add(m, mat, own, size / f, size / 2 + off * size / f, FLAT, name)
        else:
            tile = self.materials[mat].tile
            self._add(m, mat, own if frame is None else frame, np.full(3, tile), None, FLAT, name)

    def cylinder(self, base: np.ndarray, radius: float, height: float, mat: int, name: str = "cylinder") -> None:
        """Vertical cylinder standing on ``base`` (x, y, z_bottom)."""
        res = int(np.clip(8 + radius * 120, 10, 40))
        m = o3d.geometry.TriangleMesh.create_cylinder(float(radius), float(height), res, 1)
        c = np.asarray(base, np.float64) + np.array([0, 0, height / 2])
        m.translate(c)
        tile = self.materials[mat].tile
        self._add(m, mat, pose(rot_z(float(self.rng.uniform(0, 6.3))), c), np.full(3, tile), None, CYLINDER, name)

    def sphere(self, centre: np.ndarray, radius: float, mat: int, name: str = "sphere") -> None:
        res = int(np.clip(radius * 60, 8, 24))
        m = o3d.geometry.TriangleMesh.create_sphere(float(radius), res)
        m.translate(np.asarray(centre, np.float64))
        tile = self.materials[mat].tile
        self._add(m, mat, pose(np.eye(3), np.asarray(centre, np.float64)), np.full(3, tile), None, SPHERE, name)


# --------------------------------------------------------------------------------------------
# 2D placement helpers
# --------------------------------------------------------------------------------------------


def _corners(cx: float, cy: float, yaw: float, w: float, d: float) -> np.ndarray:
    return Obstacle(np.array([cx, cy, 0.0]), yaw, np.array([w / 2, d / 2, 0.0])).footprint()


def _overlap(A: np.ndarray, B: np.ndarray, margin: float = 0.0) -> bool:
    """Separating-axis test of two convex quads (4,2); ``margin`` inflates the test."""
    for P in (A, B):
        for i in range(4):
            e = P[(i + 1) % 4] - P[i]
            n = np.array([-e[1], e[0]]) / (np.linalg.norm(e) + 1e-12)
            a, b = A @ n, B @ n
            if a.max() + margin < b.min() or b.max() + margin < a.min():
                return False
    return True


@dataclass
class _Surface:
    """A rectangle where clutter can stand: centre (x, y, z_top), yaw, half extents (hx, hy)."""

    centre: np.ndarray
    yaw: float
    half: np.ndarray
    items: list[tuple[float, float, float]] = field(default_factory=list)  # local x, y, radius


# --------------------------------------------------------------------------------------------
# the room
# --------------------------------------------------------------------------------------------


def build_scene(seed: int, cfg: WorldConfig | None = None) -> Scene:
    """Build a procedural room from ``seed`` (same seed and config -> identical scene)."""
    cfg = WorldConfig() if cfg is None else cfg
    B = _Builder(seed, cfg)
    rng = B.rng
    Lx = float(rng.uniform(cfg.room_size_min[0], cfg.room_size_max[0]))
    Ly = float(rng.uniform(cfg.room_size_min[1], cfg.room_size_max[1]))
    H = float(rng.uniform(*cfg.room_height))
    T = cfg.wall_thickness

    # ---- shell materials
    floor_kind = rng.choice(["planks", "tiles", "carpet", "marble"], p=[0.45, 0.15, 0.3, 0.1])
    m_floor = B.material(str(floor_kind), tile=float(rng.uniform(1.2, 2.5)), specular=0.08 if floor_kind != "carpet" else 0.0,
                         shininess=30.0)
    wall_kind = rng.choice(["paint", "wallpaper", "bricks"], p=[0.65, 0.25, 0.1])
    m_wall = B.material(str(wall_kind), tile=float(rng.uniform(1.5, 3.0)) if wall_kind != "bricks" else 1.2, detail=0.12)
    m_ceiling = B.material("paint", tile=2.5, base=np.array([0.93, 0.93, 0.91]), detail=0.1)
    m_trim = B.material("paint", tile=1.0, base=tx.NEUTRALS[0] if rng.random() < 0.6 else tx.WOODS[rng.integers(6)])

    # ---- openings
    openings = _make_openings(rng, cfg, Lx, Ly, H)

    # ---- floor, ceiling, walls
    B.box([Lx / 2, Ly / 2, -0.05], [Lx + 2 * T, Ly + 2 * T, 0.1], m_floor, frame=np.eye(4), name="floor")
    B.box([Lx / 2, Ly / 2, H + 0.05], [Lx + 2 * T, Ly + 2 * T, 0.1], m_ceiling, frame=np.eye(4), name="ceiling")
    for w in range(4):
        L = Lx if w < 2 else Ly
        ops = sorted([o for o in openings if o.wall == w], key=lambda o: o.a)
        cuts = [-T] + [v for o in ops for v in (o.a, o.b)] + [L + T]
        for i in range(0, len(cuts), 2):  # solid full-height segments
            _wall_box(B, w, cuts[i], cuts[i + 1], 0.0, H, Lx, Ly, T, m_wall)
            _skirting(B, w, max(cuts[i], 0.0), min(cuts[i + 1], L), Lx, Ly, m_trim)
        for o in ops:
            if o.z0 > 0:
                _wall_box(B, w, o.a, o.b, 0.0, o.z0, Lx, Ly, T, m_wall)
            _wall_box(B, w, o.a, o.b, o.z1, H, Lx, Ly, T, m_wall)
            _frame_opening(B, o, Lx, Ly, T, m_trim)
    _outside(B, openings, Lx, Ly, H, T)

    # ---- lights
    lights, fixtures = _make_lights(rng, cfg, Lx, Ly, H)
    m_fix = B.material("plastic", 0.5, emission=float(cfg.light_intensity) * 8.0, base=np.array([1.0, 0.97, 0.9]), detail=0.0)
    for L_ in fixtures:
        B.cylinder([L_[0], L_[1], H - 0.04], float(L_[2]), 0.04, m_fix, name="lamp")

    # ---- furniture, decor, clutter
    surfaces: list[_Surface] = []
    footprints: list[np.ndarray] = []
    keepout = [_door_keepout(o, Lx, Ly) for o in openings if o.kind == "door"]
    n_obj = int(rng.integers(cfg.objects[0], cfg.objects[1] + 1))
    kinds = ["table", "desk", "bookcase", "cabinet", "counter", "sofa", "chair", "crate", "plant"]
    probs = np.array([0.15, 0.12, 0.14, 0.14, 0.09, 0.07, 0.13, 0.08, 0.08])
    placed = 0
    for _ in range(n_obj * 6):
        if placed >= n_obj:
            break
        kind = str(rng.choice(kinds, p=probs / probs.sum()))
        if _place_furniture(B, kind, rng, Lx, Ly, H, T, openings, footprints, keepout, surfaces):
            placed += 1
    _wall_decor(B, rng, int(rng.integers(cfg.decor[0], cfg.decor[1] + 1)), openings, Lx, Ly, H, surfaces)
    _fixtures(B, rng, openings, Lx, Ly, H, m_trim)
    if rng.random() < 0.6:
        _rug(B, rng, Lx, Ly)
    n_cl = int(rng.integers(cfg.clutter[0], cfg.clutter[1] + 1))
    floor_surface = _Surface(np.array([Lx / 2, Ly / 2, 0.0]), 0.0, np.array([Lx / 2 - 0.15, Ly / 2 - 0.15]))
    area = np.array([4 * s_.half[0] * s_.half[1] for s_ in surfaces]) + 0.15
    for _ in range(n_cl):
        on_floor = not surfaces or rng.random() < 0.2
        surf = floor_surface if on_floor else surfaces[int(rng.choice(len(surfaces), p=area / area.sum()))]
        _place_clutter(B, rng, surf, on_floor, footprints, keepout)

    bank = tx.TextureBank.build(B.tex_images, B.tex_mirror, B.tex_names)
    amb = cfg.ambient * float(rng.uniform(0.7, 1.3)) * np.mean([L.colour for L in lights], 0)
    return Scene((Lx, Ly, H), B.parts, B.materials, bank, lights, amb.astype(np.float32), B.obstacles, openings,
                 B.grime, seed)


def _make_openings(rng: np.random.Generator, cfg: WorldConfig, Lx: float, Ly: float, H: float) -> list[Opening]:
    n = int(rng.integers(cfg.openings[0], cfg.openings[1] + 1))
    out: list[Opening] = []
    for _ in range(n * 10):
        if len(out) >= n:
            break
        w = int(rng.integers(4))
        L = Lx if w < 2 else Ly
        door = rng.random() < 0.45 and sum(o.kind == "door" for o in out) < 2
        width = rng.uniform(0.8, 1.0) if door else rng.uniform(0.6, min(2.0, L - 1.0))
        if L - width < 0.8:
            continue
        a = rng.uniform(0.3, L - width - 0.3)
        z0, z1 = (0.0, min(rng.uniform(2.0, 2.15), H - 0.2)) if door else (rng.uniform(0.7, 1.0), min(rng.uniform(1.8, 2.3), H - 0.15))
        o = Opening(w, a, a + width, z0, z1, "door" if door else "window")
        gap = 1.0
        if all(q.wall != w or o.b + gap < q.a or q.b + gap < o.a for q in out):
            out.append(o)
    return out


def _wall_geom(w: int, a: float, b: float, Lx: float, Ly: float, T: float) -> tuple[np.ndarray, np.ndarray]:
    """Centre (x, y) and size (sx, sy) of a wall slab over the along-wall interval [a, b]."""
    m, L = (a + b) / 2, b - a
    if w == 0:
        return np.array([m, -T / 2]), np.array([L, T])
    if w == 1:
        return np.array([m, Ly + T / 2]), np.array([L, T])
    if w == 2:
        return np.array([-T / 2, m]), np.array([T, L])
    return np.array([Lx + T / 2, m]), np.array([T, L])


def _wall_box(B: _Builder, w: int, a: float, b: float, z0: float, z1: float, Lx: float, Ly: float, T: float, mat: int) -> None:
    if b - a < 1e-3 or z1 - z0 < 1e-3:
        return
    c, s = _wall_geom(w, a, b, Lx, Ly, T)
    B.box([c[0], c[1], (z0 + z1) / 2], [s[0], s[1], z1 - z0], mat, frame=np.eye(4), name=f"wall{w}")


def _inward(w: int) -> np.ndarray:
    return np.array([[0, 1], [0, -1], [1, 0], [-1, 0]][w], np.float64)


def _wall_point(w: int, s: float, Lx: float, Ly: float) -> np.ndarray:
    """Point on the inner face of wall w at along-wall coordinate s."""
    return np.array([[s, 0.0], [s, Ly], [0.0, s], [Lx, s]][w])


def _wall_yaw(w: int) -> float:
    """Yaw of an object whose local +y (front) points into the room from wall w."""
    return [0.0, math.pi, -math.pi / 2, math.pi / 2][w]


def _skirting(B: _Builder, w: int, a: float, b: float, Lx: float, Ly: float, mat: int) -> None:
    if b - a < 0.05:
        return
    h, d = 0.09, 0.015
    p = _wall_point(w, (a + b) / 2, Lx, Ly) + _inward(w) * d / 2
    B.box([p[0], p[1], h / 2], [b - a, d, h], mat, yaw=_wall_yaw(w), name="skirting")


def _frame_opening(B: _Builder, o: Opening, Lx: float, Ly: float, T: float, mat: int) -> None:
    """Trim around a door/window inside the reveal, a sill and mullions for windows."""
    yaw = _wall_yaw(o.wall)
    n = _inward(o.wall)
    f = 0.05  # frame width
    mid = _wall_point(o.wall, (o.a + o.b) / 2, Lx, Ly)
    W = o.b - o.a
    along = np.array([math.cos(yaw), math.sin(yaw)])
    depth = T + 0.02
    cen = mid - n * (T / 2 - 0.01)
    zc = (o.z0 + o.z1) / 2
    for side in (-1, 1):  # jambs
        p = cen + along * side * (W / 2 - f / 2)
        B.box([p[0], p[1], zc], [f, depth, o.z1 - o.z0], mat, yaw=yaw, name="jamb")
    B.box([cen[0], cen[1], o.z1 - f / 2], [W, depth, f], mat, yaw=yaw, name="head")
    if o.kind == "window":
        p = mid + n * 0.03
        B.box([p[0], p[1], o.z0 - 0.02], [W + 0.1, T + 0.06 + 0.02, 0.04], mat, yaw=yaw, name="sill")
        glass_plane = cen - n * 0.0
        for k in range(1, int(W // 0.6) + 1):  # vertical mullions
            p = glass_plane + along * (-W / 2 + k * W / (int(W // 0.6) + 1))
            B.box([p[0], p[1], zc], [0.03, 0.04, o.z1 - o.z0], mat, yaw=yaw, name="mullion")
        B.box([glass_plane[0], glass_plane[1], zc], [W, 0.04, 0.03], mat, yaw=yaw, name="transom")


def _outside(B: _Builder, openings: list[Opening], Lx: float, Ly: float, H: float, T: float) -> None:
    """Corridors behind doors (unlit: dark) and an emissive outdoor enclosure seen through windows."""
    rng = B.rng
    if any(o.kind == "door" for o in openings):
        m_cor = B.material("paint", 2.0, detail=0.3)
        m_cfl = B.material("planks", 1.5)
        for o in openings:
            if o.kind != "door":
                continue
            yaw = _wall_yaw(o.wall)
            n = _inward(o.wall)
            along = np.array([math.cos(yaw), math.sin(yaw)])
            L = Lx if o.wall < 2 else Ly
            a0, a1 = max(o.a - 0.8, -T), min(o.b + 0.8, L + T)
            D, Hc, t = 1.6, 2.4, 0.05
            mid_s = (a0 + a1) / 2
            base = _wall_point(o.wall, mid_s, Lx, Ly) - n * (T + D / 2)
            span = a1 - a0
            B.box([base[0], base[1], -t / 2], [span, D, t], m_cfl, yaw=yaw, name="corridor-floor")
            B.box([base[0], base[1], Hc + t / 2], [span, D, t], m_cor, yaw=yaw, name="corridor-ceiling")
            far = base - n * (D / 2 + t / 2)
            B.box([far[0], far[1], Hc / 2], [span, t, Hc], m_cor, yaw=yaw, name="corridor-wall")
            for side in (-1, 1):
                e = base + along * side * (span / 2 + t / 2)
                B.box([e[0], e[1], Hc / 2], [t, D + 2 * t, Hc], m_cor, yaw=yaw, name="corridor-end")
    if any(o.kind == "window" for o in openings):
        glow = B.cfg.light_intensity * float(rng.uniform(1.2, 3.0))
        m_out = B.material("outdoor", 14.0, emission=glow, detail=0.0)
        m_gnd = B.material("foliage", 3.0, emission=glow * 0.5, detail=0.0)
        E, top, bot = 7.0, 9.0, -3.0
        h = top - bot
        cx, cy = Lx / 2, Ly / 2
        w, d = Lx + 2 * E, Ly + 2 * E
        # walls of the enclosure: the outdoor print spans their full height once (top = sky)
        for c, s in (([cx, cy - d / 2, 0], [w, 0.2, h]), ([cx, cy + d / 2, 0], [w, 0.2, h]),
                     ([cx - w / 2, cy, 0], [0.2, d, h]), ([cx + w / 2, cy, 0], [0.2, d, h])):
            c = np.array(c, np.float64) + [0, 0, (top + bot) / 2]
            mesh = _box_mesh(np.array(s))
            mesh.translate(c)
            B._add(mesh, m_out, pose(np.eye(3), c), np.array([14.0, 14.0, h]), np.array([0.0, 0.0, h / 2]), FLAT, "outdoor")
        B.box([cx, cy, bot - 0.1], [w, d, 0.2], m_gnd, frame=np.eye(4), name="ground")
        B.box([cx, cy, top + 0.1], [w, d, 0.2], m_out, face=True, name="sky")


def _make_lights(rng: np.random.Generator, cfg: WorldConfig, Lx: float, Ly: float, H: float) -> tuple[list[Light], list[np.ndarray]]:
    n = int(rng.integers(cfg.lights[0], cfg.lights[1] + 1))
    warmth = rng.uniform(0, 1)
    colour = np.array([1.0, 0.93 - 0.08 * warmth, 0.85 - 0.2 * warmth]) * rng.uniform(0.95, 1.05, 3)
    lights, fixtures = [], []
    for k in range(n):
        for _ in range(30):
            x, y = rng.uniform(0.25 * Lx, 0.75 * Lx) if n == 1 else rng.uniform(0.6, Lx - 0.6), rng.uniform(0.6, Ly - 0.6)
            if all(np.hypot(x - L.pos[0], y - L.pos[1]) > 1.2 for L in lights):
                break
        z = H - 0.12
        I = cfg.light_intensity * z**2 * float(rng.uniform(0.7, 1.3)) / math.sqrt(n)
        radius = float(rng.uniform(0.05, 0.2))
        lights.append(Light(np.array([x, y, z]), colour.astype(np.float32), I, radius))
        fixtures.append(np.array([x, y, max(radius, 0.1)]))
    return lights, fixtures


def _door_keepout(o: Opening, Lx: float, Ly: float) -> np.ndarray:
    yaw = _wall_yaw(o.wall)
    p = _wall_point(o.wall, (o.a + o.b) / 2, Lx, Ly) + _inward(o.wall) * 0.5
    return _corners(p[0], p[1], yaw, o.b - o.a + 0.3, 1.0)


# --------------------------------------------------------------------------------------------
# furniture
# --------------------------------------------------------------------------------------------


def _place_furniture(B: _Builder, kind: str, rng: np.random.Generator, Lx: float, Ly: float, H: float, T: float,
                     openings: list[Opening], footprints: list[np.ndarray], keepout: list[np.ndarray],
                     surfaces: list[_Surface]) -> bool:
    dims = {
        "table": (rng.uniform(0.8, 1.8), rng.uniform(0.6, 1.0), rng.uniform(0.70, 0.78)),
        "desk": (rng.uniform(1.0, 1.6), rng.uniform(0.55, 0.8), rng.uniform(0.72, 0.76)),
        "bookcase": (rng.uniform(0.6, 1.2), rng.uniform(0.25, 0.4), rng.uniform(1.0, min(2.1, H - 0.3))),
        "cabinet": (rng.uniform(0.5, 1.6), rng.uniform(0.4, 0.6), rng.choice([rng.uniform(0.5, 1.0), rng.uniform(1.6, 2.0)])),
        "sofa": (rng.uniform(1.5, 2.2), rng.uniform(0.8, 0.95), rng.uniform(0.75, 0.9)),
        "counter": (rng.uniform(1.2, 3.0), rng.uniform(0.55, 0.65), rng.uniform(0.88, 0.94)),
        "chair": (rng.uniform(0.42, 0.52), rng.uniform(0.42, 0.52), rng.uniform(0.8, 0.95)),
        "crate": (rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.6), rng.uniform(0.25, 0.6)),
        "plant": (rng.uniform(0.5, 0.8), 0.0, rng.uniform(0.8, 1.6)),
    }
    w, d, h = dims[kind]
    if kind == "plant":
        d = w
    h = float(min(h, H - 0.2))
    wall_pref = {"counter": 1.0, "bookcase": 1.0, "cabinet": 0.9, "sofa": 0.9, "desk": 0.8, "table": 0.3, "chair": 0.2, "crate": 0.5,
                 "plant": 0.6}[kind]
    for _ in range(25):
        if rng.random() < wall_pref:
            wall = int(rng.integers(4))
            L = Lx if wall < 2 else Ly
            if L < w + 0.1:
                continue
            s = rng.uniform(w / 2 + 0.02, L - w / 2 - 0.02)
            p = _wall_point(wall, s, Lx, Ly) + _inward(wall) * (d / 2 + 0.02)
            yaw = _wall_yaw(wall)
            # tall things do not stand in front of windows
            tall = 2.2 if kind == "counter" else h  # counters carry wall cabinets
            if any(o.wall == wall and o.kind == "window" and tall > o.z0 - 0.05 and s + w / 2 > o.a and s - w / 2 < o.b
                   for o in openings):
                continue
        else:
            yaw = float(rng.uniform(0, 2 * math.pi)) if rng.random() < 0.5 else float(rng.integers(4) * math.pi / 2)
            r = 0.5 * math.hypot(w, d)
            if Lx < 2 * r + 0.6 or Ly < 2 * r + 0.6:
                continue
            p = np.array([rng.uniform(r + 0.3, Lx - r - 0.3), rng.uniform(r + 0.3, Ly - r - 0.3)])
        fp = _corners(p[0], p[1], yaw, w, d)
        if fp[:, 0].min() < -1e-6 or fp[:, 1].min() < -1e-6 or fp[:, 0].max() > Lx + 1e-6 or fp[:, 1].max() > Ly + 1e-6:
            continue
        if any(_overlap(fp, q, 0.05) for q in footprints) or any(_overlap(fp, q) for q in keepout):
            continue
        # keep the room walkable: total furniture footprint ≤ 40% of the floor
        if sum(_area(q) for q in footprints) + w * d > 0.4 * Lx * Ly:
            return False
        footprints.append(fp)
        top = _FURNITURE[kind](B, rng, np.array([p[0], p[1]]), yaw, w, d, h, surfaces)
        B.obstacles.append(Obstacle(np.array([p[0], p[1], top / 2]), yaw, np.array([w / 2, d / 2, top / 2]), kind))
        return True
    return False


def _area(q: np.ndarray) -> float:
    x, y = q[:, 0], q[:, 1]
    return 0.5 * abs(float(x @ np.roll(y, 1) - y @ np.roll(x, 1)))


def _local_to_world(c: np.ndarray, yaw: float, lx: float, ly: float) -> np.ndarray:
    cs, sn = math.cos(yaw), math.sin(yaw)
    return np.array([c[0] + cs * lx - sn * ly, c[1] + sn * lx + cs * ly])


def _lbox(B: _Builder, c: np.ndarray, yaw: float, lx: float, ly: float, z0: float, size: tuple[float, float, float],
          mat: int, face: bool = False, name: str = "part", crop: bool = False) -> None:
    """Box given in object-local coordinates: centre (lx, ly), bottom z0, size (sx, sy, sz)."""
    p = _local_to_world(c, yaw, lx, ly)
    B.box([p[0], p[1], z0 + size[2] / 2], size, mat, yaw=yaw, face=face, name=name, crop=crop)


def _wood_mat(B: _Builder, rng: np.random.Generator) -> int:
    if rng.random() < 0.65:
        return B.material("wood", float(rng.uniform(0.5, 1.2)), specular=float(rng.uniform(0.02, 0.2)), shininess=40.0,
                          image_ok=True)
    return B.plain(tx.room_colour(rng), tile=0.6, specular=float(rng.uniform(0.02, 0.15)))


def _legs(B: _Builder, rng: np.random.Generator, c: np.ndarray, yaw: float, w: float, d: float, h: float, mat: int,
          inset: float = 0.04) -> None:
    round_ = rng.random() < 0.4
    t = float(rng.uniform(0.035, 0.06))
    for sx in (-1, 1):
        for sy in (-1, 1):
            lx, ly = sx * (w / 2 - inset - t / 2), sy * (d / 2 - inset - t / 2)
            if round_:
                p = _local_to_world(c, yaw, lx, ly)
                B.cylinder([p[0], p[1], 0.0], t / 2, h, mat, name="leg")
            else:
                _lbox(B, c, yaw, lx, ly, 0.0, (t, t, h), mat, name="leg")


def _table(B: _Builder, rng: np.random.Generator, c: np.ndarray, yaw: float, w: float, d: float, h: float,
           surfaces: list[_Surface]) -> float:
    top_mat = _wood_mat(B, rng)
    leg_mat = top_mat if rng.random() < 0.5 else B.material("metal", 0.5, specular=0.3, shininess=60.0)
    th = float(rng.uniform(0.025, 0.05))
    _lbox(B, c, yaw, 0, 0, h - th, (w, d, th), top_mat, name="tabletop")
    _legs(B, rng, c, yaw, w, d, h - th, leg_mat)
    surfaces.append(_Surface(np.array([c[0], c[1], h]), yaw, np.array([w / 2, d / 2])))
    return h


def _desk(B: _Builder, rng: np.random.Generator, c: np.ndarray, yaw: float, w: float, d: float, h: float,
          surfaces: list[_Surface]) -> float:
    mat = _wood_mat(B, rng)
    th = 0.03
    _lbox(B, c, yaw, 0, 0, h - th, (w, d, th), mat, name="desktop")
    side = float(rng.choice([-1, 1]))
    dw = 0.42
    _lbox(B, c, yaw, side * (w / 2 - dw / 2), 0, 0, (dw, d - 0.02, h - th), mat, name="drawers")
    front = B.plain(tx.room_colour(rng), 0.5) if rng.random() < 0.5 else mat
    handle = B.material("metal", 0.3, specular=0.4, shininess=80.0)
    n = int(rng.integers(2, 4))
    dh = (h - th - 0.04) / n
    for k in range(n):
        z0 = 0.02 + k * dh
        _lbox(B, c, yaw, side * (w / 2 - dw / 2), d / 2 - 0.005, z0 + 0.005, (dw - 0.02, 0.012, dh - 0.01), front, name="drawer")
        _lbox(B, c, yaw, side * (w / 2 - dw / 2), d / 2 + 0.012, z0 + dh * 0.6, (0.12, 0.02, 0.015), handle, name="handle")
    leg_mat = B.material("metal", 0.5, specular=0.3)
    for sy in (-1, 1):
        lx = -side * (w / 2 - 0.04)
        _lbox(B, c, yaw, lx, sy * (d / 2 - 0.04), 0, (0.04, 0.04, h - th), leg_mat, name="leg")
    surfaces.append(_Surface(np.array([c[0], c[1], h]), yaw, np.array([w / 2, d / 2])))
    return h


def _bookcase(B: _Builder, rng: np.random.Generator, c: np.ndarray, yaw: float, w: float, d: float, h: float,
              surfaces: list[_Surface]) -> float:
    mat = _wood_mat(B, rng)
    back = B.material("paint", 1.0) if rng.random() < 0.5 else mat
    t = 0.02
    for sx in (-1, 1):
        _lbox(B, c, yaw, sx * (w / 2 - t / 2), 0, 0, (t, d, h), mat, name="side")
    _lbox(B, c, yaw, 0, -d / 2 + 0.005, 0, (w - 2 * t, 0.01, h), back, name="back")
    n = max(2, int(h / 0.35))
    gap = (h - t) / n
    covers = [B.material("poster", 0.3) for _ in range(int(rng.integers(2, 5)))]
    for k in range(n + 1):
        z = min(k * gap, h - t)
        _lbox(B, c, yaw, 0, 0, z, (w - 2 * t, d, t), mat, name="shelf")
        if k < n and rng.random() < 0.8:  # books standing on this shelf
            x = -w / 2 + t + 0.01
            end = w / 2 - t - float(rng.uniform(0.0, 0.4)) * w
            while x < end:
                bw = float(rng.uniform(0.015, 0.06))
                bh = float(min(rng.uniform(0.15, 0.32), gap - t - 0.02))
                bd = float(min(rng.uniform(0.14, 0.24), d - 0.03))
                if x + bw > end or bh < 0.05:
                    break
                colour = tx.srgb_to_linear(tx.accent_colour(rng) if rng.random() < 0.7 else tx.room_colour(rng))
                cov = covers[int(rng.integers(len(covers)))]
                mb = len(B.materials)  # a book: a shared cover print, tinted per book
                B.materials.append(Material("book", B.materials[cov].tex, 0.3, 0.35 + 0.65 * colour, 0.05, 20.0, 0.0, 0.0))
                _lbox(B, c, yaw, x + bw / 2, d / 2 - bd / 2 - 0.005, z + t, (bw, bd, bh), mb, face=True, name="book", crop=True)
                x += bw + float(rng.uniform(0.0, 0.004))
    surfaces.append(_Surface(np.array([c[0], c[1], h]), yaw, np.array([w / 2, d / 2])))
    return h


def _cabinet(B: _Builder, rng: np.random.Generator, c: np.ndarray, yaw: float, w: float, d: float, h: float,
             surfaces: list[_Surface]) -> float:
    body = _wood_mat(B, rng)
    door = B.plain(tx.room_colour(rng), 0.6, specular=0.1) if rng.random() < 0.5 else body
    handle = B.material("metal", 0.3, specular=0.4, shininess=80.0)
    plinth = 0.06
    _lbox(B, c, yaw, 0, -0.01, plinth, (w, d - 0.02, h - plinth), body, name="cabinet")
    _lbox(B, c, yaw, 0, -0.03, 0, (w - 0.04, d - 0.06, plinth), B.plain(np.array([0.1, 0.1, 0.1]), 0.5), name="plinth")
    n = max(1, int(round(w / 0.45)))
    dw = w / n
    rows = 1 if h < 1.2 else 2
    rh = (h - plinth) / rows
    for r in range(rows):
        for k in range(n):
            lx = -w / 2 + dw * (k + 0.5)
            _lbox(B, c, yaw, lx, d / 2 - 0.005, plinth + r * rh + 0.004, (dw - 0.006, 0.018, rh - 0.008), door, name="door")
            hx = lx + (dw / 2 - 0.05) * (1 if k % 2 == 0 else -1)
            _lbox(B, c, yaw, hx, d / 2 + 0.012, plinth + r * rh + rh * 0.5, (0.015, 0.02, 0.12), handle, name="handle")
    if h < 1.3:
        surfaces.append(_Surface(np.array([c[0], c[1], h]), yaw, np.array([w / 2, d / 2])))
    return h


def _sofa(B: _Builder, rng: np.random.Generator, c: np.ndarray, yaw: float, w: float, d: float, h: float,
          surfaces: list[_Surface]) -> float:
    cloth = B.material("fabric", float(rng.uniform(0.3, 0.6)), image_ok=False)
    cushion = B.material("fabric", float(rng.uniform(0.3, 0.6))) if rng.random() < 0.4 else cloth
    arm = float(rng.uniform(0.12, 0.22))
    seat_h = 0.42
    _lbox(B, c, yaw, 0, 0, 0.06, (w, d, seat_h - 0.16), cloth, name="sofa-base")
    _lbox(B, c, yaw, 0, -d / 2 + 0.1, 0.06, (w, 0.2, h - 0.06), cloth, name="sofa-back")
    for sx in (-1, 1):
        _lbox(B, c, yaw, sx * (w / 2 - arm / 2), 0, 0.06, (arm, d, seat_h + 0.18), cloth, name="sofa-arm")
    n = int(rng.integers(2, 4))
    cw = (w - 2 * arm) / n
    for k in range(n):
        lx = -w / 2 + arm + cw * (k + 0.5)
        _lbox(B, c, yaw, lx, 0.1, seat_h - 0.1, (cw - 0.01, d - 0.22, 0.14), cushion, name="cushion")
        if rng.random() < 0.5:
            _lbox(B, c, yaw, lx, -d / 2 + 0.27, seat_h + 0.04, (cw * 0.7, 0.12, 0.35), B.material("fabric", 0.3),
                  name="pillow")
    feet = B.plain(np.array([0.15, 0.12, 0.1]), 0.5)
    for sx in (-1, 1):
        for sy in (-1, 1):
            _lbox(B, c, yaw, sx * (w / 2 - 0.05), sy * (d / 2 - 0.05), 0, (0.05, 0.05, 0.06), feet, name="foot")
    return h


def _chair(B: _Builder, rng: np.random.Generator, c: np.ndarray, yaw: float, w: float, d: float, h: float,
           surfaces: list[_Surface]) -> float:
    mat = _wood_mat(B, rng)
    seat = B.material("fabric", 0.3) if rng.random() < 0.4 else mat
    sh = float(rng.uniform(0.43, 0.48))
    _legs(B, rng, c, yaw, w, d, sh - 0.04, mat, inset=0.02)
    _lbox(B, c, yaw, 0, 0, sh - 0.04, (w, d, 0.04), seat, name="seat")
    for sx in (-1, 1):
        _lbox(B, c, yaw, sx * (w / 2 - 0.03), -d / 2 + 0.02, sh, (0.035, 0.035, h - sh), mat, name="post")
    _lbox(B, c, yaw, 0, -d / 2 + 0.02, h - 0.18, (w - 0.02, 0.025, 0.16), mat, name="backrest")
    if rng.random() < 0.5:
        _lbox(B, c, yaw, 0, -d / 2 + 0.02, sh + 0.12, (w - 0.06, 0.02, 0.05), mat, name="rail")
    return h


def _crate(B: _Builder, rng: np.random.Generator, c: np.ndarray, yaw: float, w: float, d: float, h: float,
           surfaces: list[_Surface]) -> float:
    mat = B.material("cardboard", float(rng.uniform(0.4, 0.8)), image_ok=True) if rng.random() < 0.7 else _wood_mat(B, rng)
    _lbox(B, c, yaw, 0, 0, 0, (w, d, h), mat, name="crate")
    top = h
    if rng.random() < 0.4:
        w2, d2, h2 = w * rng.uniform(0.6, 0.95), d * rng.uniform(0.6, 0.95), h * rng.uniform(0.5, 1.0)
        _lbox(B, c, yaw + float(rng.normal(0, 0.15)), 0, 0, h, (w2, d2, h2), B.material("cardboard", 0.6), name="crate")
        top = h + h2
    surfaces.append(_Surface(np.array([c[0], c[1], top]), yaw, np.array([w / 4, d / 4])))
    return top


def _plant(B: _Builder, rng: np.random.Generator, c: np.ndarray, yaw: float, w: float, d: float, h: float,
           surfaces: list[_Surface]) -> float:
    pot = B.plain(tx.room_colour(rng), 0.3, specular=0.15)
    r = w * 0.3
    ph = float(rng.uniform(0.25, 0.45))
    B.cylinder([c[0], c[1], 0.0], r, ph, pot, name="pot")
    leaves = B.material("foliage", float(rng.uniform(0.3, 0.6)), detail=0.0)
    top = ph
    for k in range(int(rng.integers(2, 5))):
        rr = float(w * rng.uniform(0.25, 0.45))
        z = ph + rr * 0.8 + (h - ph - rr) * rng.random() * (k > 0)
        off = rng.normal(0, w * 0.12, 2)
        B.sphere([c[0] + off[0], c[1] + off[1], z], rr, leaves, name="foliage")
        top = max(top, z + rr)
    return top


def _counter(B: _Builder, rng: np.random.Generator, c: np.ndarray, yaw: float, w: float, d: float, h: float,
             surfaces: list[_Surface]) -> float:
    """Kitchen run against a wall: base cabinets, worktop, tiled splashback, wall cabinets above."""
    body = B.plain(tx.room_colour(rng), 0.6, specular=0.1) if rng.random() < 0.6 else _wood_mat(B, rng)
    handle = B.material("metal", 0.3, specular=0.4, shininess=80.0)
    top_mat = B.material(str(rng.choice(["marble", "wood", "neutral"])), float(rng.uniform(0.6, 1.2)), specular=0.2,
                         shininess=50.0)
    th, plinth = 0.035, 0.1
    _lbox(B, c, yaw, 0, -0.02, plinth, (w, d - 0.04, h - th - plinth), body, name="counter")
    _lbox(B, c, yaw, 0, -0.04, 0, (w, d - 0.1, plinth), B.plain(np.array([0.12, 0.12, 0.12]), 0.5), name="plinth")
    _lbox(B, c, yaw, 0, 0.01, h - th, (w, d + 0.02, th), top_mat, name="worktop")
    n = max(1, int(round(w / 0.5)))
    dw = w / n
    drawers = rng.random() < 0.5
    for k in range(n):
        lx = -w / 2 + dw * (k + 0.5)
        if drawers and k % 2 == 0:
            rows = 3
            rh = (h - th - plinth) / rows
            for r in range(rows):
                _lbox(B, c, yaw, lx, d / 2 - 0.02, plinth + r * rh + 0.003, (dw - 0.006, 0.018, rh - 0.006), body, name="drawer")
                _lbox(B, c, yaw, lx, d / 2 - 0.002, plinth + r * rh + rh * 0.7, (0.14, 0.02, 0.015), handle, name="handle")
        else:
            _lbox(B, c, yaw, lx, d / 2 - 0.02, plinth + 0.003, (dw - 0.006, 0.018, h - th - plinth - 0.006), body, name="door")
            _lbox(B, c, yaw, lx + (dw / 2 - 0.05) * (1 if k % 2 else -1), d / 2 - 0.002, h - th - 0.2, (0.015, 0.02, 0.12),
                  handle, name="handle")
    splash = B.material("tiles", float(rng.uniform(0.3, 0.8)), specular=0.15, shininess=40.0)
    _lbox(B, c, yaw, 0, -d / 2 + 0.005, h, (w, 0.01, 0.55), splash, name="splashback")
    if rng.random() < 0.8:  # wall cabinets
        ud, z0 = 0.33, h + 0.55
        uh = float(rng.uniform(0.6, 0.75))
        _lbox(B, c, yaw, 0, -d / 2 + ud / 2, z0, (w, ud, uh), body, name="wallcabinet")
        for k in range(n):
            lx = -w / 2 + dw * (k + 0.5)
            _lbox(B, c, yaw, lx, -d / 2 + ud + 0.009, z0 + 0.003, (dw - 0.006, 0.018, uh - 0.006), body, name="door")
            _lbox(B, c, yaw, lx + (dw / 2 - 0.05) * (1 if k % 2 else -1), -d / 2 + ud + 0.028, z0 + 0.08, (0.015, 0.02, 0.12),
                  handle, name="handle")
        p = _local_to_world(c, yaw, 0, -d / 2 + ud / 2)
        B.obstacles.append(Obstacle(np.array([p[0], p[1], z0 + uh / 2]), yaw, np.array([w / 2, ud / 2, uh / 2]), "wallcabinet"))
    surfaces.append(_Surface(np.array([c[0], c[1], h]), yaw, np.array([w / 2, d / 2 - 0.03])))
    return h


_FURNITURE = {"table": _table, "desk": _desk, "bookcase": _bookcase, "cabinet": _cabinet, "sofa": _sofa, "chair": _chair,
              "crate": _crate, "plant": _plant, "counter": _counter}


# --------------------------------------------------------------------------------------------
# wall decor and clutter
# --------------------------------------------------------------------------------------------


def _wall_decor(B: _Builder, rng: np.random.Generator, n: int, openings: list[Opening], Lx: float, Ly: float,
                H: float, surfaces: list[_Surface]) -> None:
    """Posters, framed pictures (prints or photo crops), boards, clocks and floating shelves on the walls."""
    used: list[tuple[int, float, float, float, float]] = []
    for _ in range(n * 8):
        if len(used) >= n:
            break
        wall = int(rng.integers(4))
        L = Lx if wall < 2 else Ly
        kind = rng.random()
        if kind < 0.12:
            pw, ph = rng.uniform(0.9, 1.8), rng.uniform(0.6, 1.1)  # whiteboard / pinboard
        elif kind < 0.3:
            pw, ph = rng.uniform(0.5, 1.2), 0.3  # floating shelf
        elif kind < 0.38:
            pw = ph = rng.uniform(0.22, 0.4)  # clock
        else:
            pw, ph = rng.uniform(0.25, 0.9), rng.uniform(0.3, 0.9)
        if L < pw + 0.4:
            continue
        s = float(rng.uniform(pw / 2 + 0.2, L - pw / 2 - 0.2))
        zc = float(rng.uniform(1.1, min(1.9, H - ph / 2 - 0.15)))
        if any(o.wall == wall and s + pw / 2 > o.a - 0.1 and s - pw / 2 < o.b + 0.1 for o in openings):
            continue
        if any(u[0] == wall and s + pw / 2 > u[1] - 0.05 and s - pw / 2 < u[2] + 0.05
               and zc + ph / 2 > u[3] - 0.05 and zc - ph / 2 < u[4] + 0.05 for u in used):
            continue
        used.append((wall, s - pw / 2, s + pw / 2, zc - ph / 2, zc + ph / 2))
        yaw = _wall_yaw(wall)
        n_in = _inward(wall)
        frame_d = float(rng.uniform(0.015, 0.04))
        p = _wall_point(wall, s, Lx, Ly) + n_in * frame_d / 2
        if kind < 0.12:
            board = B.material("poster", 1.0) if rng.random() < 0.5 else B.material("paint", 1.0, base=np.array([0.95, 0.95, 0.95]))
            B.box([p[0], p[1], zc], [pw, frame_d, ph], board, yaw=yaw, face=True, name="board")
            if rng.random() < 0.6:  # notes pinned on it
                for _k in range(int(rng.integers(2, 7))):
                    q = p + n_in * (frame_d / 2 + 0.001)
                    off = rng.uniform(-0.4, 0.4, 2) * [pw, ph]
                    qq = q + np.array([math.cos(yaw), math.sin(yaw)]) * off[0]
                    B.box([qq[0], qq[1], zc + off[1]], [rng.uniform(0.08, 0.21), 0.002, rng.uniform(0.08, 0.3)],
                          B.material("poster", 1.0), yaw=yaw, face=True, name="note", crop=True)
        elif kind < 0.3:
            dsh = float(rng.uniform(0.18, 0.26))
            q = _wall_point(wall, s, Lx, Ly) + n_in * dsh / 2
            B.box([q[0], q[1], zc], [pw, dsh, 0.025], _wood_mat(B, rng), yaw=yaw, name="wallshelf")
            surfaces.append(_Surface(np.array([q[0], q[1], zc + 0.0125]), yaw, np.array([pw / 2, dsh / 2])))
        elif kind < 0.38:
            q = _wall_point(wall, s, Lx, Ly) + n_in * 0.02
            face = B.material("poster", 1.0)
            rim = B.plain(tx.NEUTRALS[int(rng.integers(len(tx.NEUTRALS)))], 0.3, specular=0.2)
            B.box([q[0], q[1], zc], [pw, 0.04, pw], rim, yaw=yaw, name="clock")
            q2 = q + n_in * 0.021
            B.box([q2[0], q2[1], zc], [pw * 0.85, 0.002, pw * 0.85], face, yaw=yaw, face=True, name="clockface")
        else:
            if rng.random() < 0.6:  # framed picture: frame box + print slightly in front
                fm = B.plain(tx.NEUTRALS[int(rng.integers(len(tx.NEUTRALS)))], 0.3, specular=0.1)
                B.box([p[0], p[1], zc], [pw, frame_d, ph], fm, yaw=yaw, name="frame")
                q = p + n_in * (frame_d / 2 + 0.001)
                fw = float(rng.uniform(0.02, 0.06))
                art = B.material("image" if B.image_files and rng.random() < 0.5 else "poster", 1.0)
                B.box([q[0], q[1], zc], [pw - 2 * fw, 0.002, ph - 2 * fw], art, yaw=yaw, face=True, name="picture", crop=True)
            else:
                art = B.material("image" if B.image_files and rng.random() < 0.4 else "poster", 1.0)
                B.box([p[0], p[1], zc], [pw, 0.003, ph], art, yaw=yaw, face=True, name="poster", crop=True)


def _fixtures(B: _Builder, rng: np.random.Generator, openings: list[Opening], Lx: float, Ly: float, H: float,
              trim: int) -> None:
    """Switches and sockets, radiators under windows, curtains beside them, door leaves."""
    white = B.plain(np.array([0.93, 0.93, 0.9]), 0.2, specular=0.2)
    dark = B.plain(np.array([0.15, 0.15, 0.15]), 0.2)
    for w in range(4):
        L = Lx if w < 2 else Ly
        for _ in range(int(rng.integers(0, 3))):
            s = float(rng.uniform(0.3, L - 0.3))
            if any(o.wall == w and o.a - 0.1 < s < o.b + 0.1 for o in openings):
                continue
            z = float(rng.choice([0.3, 1.05]))
            n = _inward(w)
            p = _wall_point(w, s, Lx, Ly) + n * 0.006
            B.box([p[0], p[1], z], [0.08, 0.012, 0.08], white, yaw=_wall_yaw(w), name="socket")
            q = p + n * 0.0065
            for dx in ((-0.012, 0.012) if z < 0.5 else (0.0,)):
                qq = q + np.array([math.cos(_wall_yaw(w)), math.sin(_wall_yaw(w))]) * dx
                B.box([qq[0], qq[1], z], [0.007, 0.002, 0.02 if z < 0.5 else 0.035], dark, yaw=_wall_yaw(w), name="slot")
    for o in openings:
        yaw, n = _wall_yaw(o.wall), _inward(o.wall)
        along = np.array([math.cos(yaw), math.sin(yaw)])
        mid = _wall_point(o.wall, (o.a + o.b) / 2, Lx, Ly)
        W = o.b - o.a
        if o.kind == "window" and o.z0 > 0.5 and rng.random() < 0.5:  # radiator with fins
            rw, rh = W * 0.8, min(0.6, o.z0 - 0.2)
            p = mid + n * 0.06
            B.box([p[0], p[1], 0.15 + rh / 2], [rw, 0.03, rh], white, yaw=yaw, name="radiator")
            for k in range(int(rw / 0.05)):
                q = p + along * (-rw / 2 + 0.025 + k * 0.05) + n * 0.025
                B.box([q[0], q[1], 0.15 + rh / 2], [0.012, 0.04, rh], white, yaw=yaw, name="fin")
        if o.kind == "window" and rng.random() < 0.5:  # curtains: folded fabric beside the window
            cloth = B.material("fabric", float(rng.uniform(0.3, 0.6)))
            top = min(o.z1 + 0.15, H - 0.05)
            cw = float(rng.uniform(0.25, 0.45))
            for side in (-1, 1):
                for k in range(5):  # pleats: alternating depth
                    q = mid + along * side * (W / 2 - 0.05 + (k + 0.5) * cw / 5) + n * (0.08 + 0.025 * (k % 2))
                    B.box([q[0], q[1], (top + 0.03) / 2], [cw / 5 + 0.005, 0.025, top - 0.03], cloth, yaw=yaw, name="curtain")
            q = mid + n * 0.08
            B.cylinder([q[0], q[1], top], 0.012, 0.02, dark, name="rod")
        if o.kind == "door" and rng.random() < 0.7:  # an open door leaf swung into the corridor
            leaf = B.material("wood", 0.8, specular=0.1) if rng.random() < 0.5 else B.plain(tx.room_colour(rng), 0.8)
            hinge = mid - along * W / 2 - n * (B.cfg.wall_thickness + 0.03)
            ang = float(rng.uniform(0.5, 1.3))  # swung into the corridor
            vec = math.cos(ang) * along - math.sin(ang) * n
            q = hinge + vec * W / 2
            B.box([q[0], q[1], o.z1 / 2 - 0.005], [W - 0.02, 0.04, o.z1 - 0.02], leaf, yaw=math.atan2(vec[1], vec[0]),
                  name="doorleaf")


def _rug(B: _Builder, rng: np.random.Generator, Lx: float, Ly: float) -> None:
    w, d = rng.uniform(1.2, min(2.6, Lx - 0.6)), rng.uniform(0.8, min(1.8, Ly - 0.6))
    if w <= 0 or d <= 0:
        return
    cx, cy = rng.uniform(0.3 + w / 2, Lx - 0.3 - w / 2), rng.uniform(0.3 + d / 2, Ly - 0.3 - d / 2)
    B.box([cx, cy, 0.006], [w, d, 0.012], B.material("rug", 1.0), yaw=float(rng.normal(0, 0.05)), face=True, name="rug")


CLUTTER = {  # kind: (probability, footprint radius in m)
    "books": (0.16, 0.14), "box": (0.14, 0.15), "cup": (0.1, 0.05), "bottle": (0.09, 0.045), "ball": (0.05, 0.1),
    "monitor": (0.04, 0.3), "bowl": (0.06, 0.09), "papers": (0.08, 0.17), "keyboard": (0.04, 0.24), "laptop": (0.04, 0.2),
    "vase": (0.05, 0.07), "lamp": (0.04, 0.12), "frame": (0.05, 0.1), "cubes": (0.06, 0.08),
}


def _place_clutter(B: _Builder, rng: np.random.Generator, surf: _Surface, on_floor: bool, footprints: list[np.ndarray],
                   keepout: list[np.ndarray]) -> None:
    names = list(CLUTTER)
    pr = np.array([CLUTTER[k][0] for k in names])
    kind = str(rng.choice(names, p=pr / pr.sum()))
    if on_floor and kind not in ("books", "box", "ball", "bottle", "vase", "cubes"):
        kind = "box"
    size = CLUTTER[kind][1] * (2.0 if on_floor else 1.0)
    hx, hy = surf.half
    if hx < size or hy < size:
        return
    for _ in range(20):
        lx, ly = rng.uniform(-hx + size, hx - size), rng.uniform(-hy + size, hy - size)
        if all(math.hypot(lx - a, ly - b) > size + r for a, b, r in surf.items):
            break
    else:
        return
    p = _local_to_world(surf.centre[:2], surf.yaw, lx, ly)
    if on_floor:
        fp = _corners(p[0], p[1], 0.0, 2 * size, 2 * size)
        if any(_overlap(fp, q, 0.02) for q in footprints) or any(_overlap(fp, q) for q in keepout):
            return
        footprints.append(fp)
    surf.items.append((lx, ly, size))
    z = float(surf.centre[2])
    # things on a shelf or desk mostly face the room (the surface's front), with some scatter
    yaw = float(surf.yaw + rng.normal(0, 0.3)) if rng.random() < 0.6 else float(rng.uniform(0, 2 * math.pi))
    top = z
    big = 1.6 if on_floor else 1.0
    if kind == "books":
        for _k in range(int(rng.integers(1, 5))):
            bw, bd, bh = rng.uniform(0.13, 0.24) * big, rng.uniform(0.1, 0.17) * big, rng.uniform(0.015, 0.05)
            B.box([p[0], p[1], top + bh / 2], [bw, bd, bh], B.material("poster", 0.3), yaw=yaw + float(rng.normal(0, 0.2)),
                  face=True, name="book", crop=True)
            top += bh
    elif kind == "papers":
        for _k in range(int(rng.integers(1, 4))):
            B.box([p[0] + rng.normal(0, 0.02), p[1] + rng.normal(0, 0.02), top + 0.002], [0.21, 0.297, 0.003],
                  B.material("poster", 0.3), yaw=yaw + float(rng.normal(0, 0.3)), face=True, name="paper", crop=True)
            top += 0.003
    elif kind == "box":
        s = rng.uniform(0.5, 1.0, 3) * size * np.array([1.6, 1.6, 1.2])
        m = B.material(str(rng.choice(["cardboard", "poster", "neutral", "poster"])), 0.4, image_ok=True)
        B.box([p[0], p[1], top + s[2] / 2], s, m, yaw=yaw, face=B.materials[m].name in ("poster", "image"), name="box", crop=True)
        top += s[2]
    elif kind == "cubes":  # toy blocks / dice
        for _k in range(int(rng.integers(1, 4))):
            e = float(rng.uniform(0.03, 0.08)) * big
            off = rng.normal(0, size * 0.4, 2)
            B.box([p[0] + off[0], p[1] + off[1], z + e / 2], [e, e, e], B.material("poster", 0.2), yaw=float(rng.uniform(0, 6.3)),
                  face=True, name="cube", crop=True)
            top = max(top, z + e)
    elif kind in ("cup", "bottle", "bowl", "vase"):
        r = size * rng.uniform(0.6, 1.0)
        h = {"cup": rng.uniform(0.07, 0.12), "bottle": rng.uniform(0.18, 0.32), "bowl": rng.uniform(0.04, 0.08),
             "vase": rng.uniform(0.15, 0.3)}[kind] * big
        m = B.material(str(rng.choice(["plastic", "plastic", "metal", "poster", "marble"])), 0.2, specular=0.3, shininess=60.0)
        B.cylinder([p[0], p[1], top], r, h, m, name=kind)
        if kind == "bottle":
            B.cylinder([p[0], p[1], top + h], r * 0.35, h * 0.3, m, name="neck")
            h *= 1.3
        if kind == "cup":
            q = _local_to_world(p, yaw, r + 0.012, 0)
            B.box([q[0], q[1], top + h * 0.55], [0.03, 0.012, h * 0.5], m, yaw=yaw, name="handle")
        if kind == "vase" and rng.random() < 0.7:
            B.sphere([p[0], p[1], top + h + 0.08], 0.1, B.material("foliage", 0.3, detail=0.0), name="flowers")
            h += 0.18
        top += h
    elif kind == "ball":
        r = size * rng.uniform(0.5, 1.0)
        m = B.material(str(rng.choice(["dead_leaves", "plastic", "fabric", "poster"])), 0.3, specular=0.2)
        B.sphere([p[0], p[1], top + r], r, m, name="ball")
        top += 2 * r
    elif kind == "monitor":
        w, h = rng.uniform(0.4, 0.6), rng.uniform(0.25, 0.38)
        blk = B.plain(np.array([0.05, 0.05, 0.06]), 0.5, specular=0.3)
        B.box([p[0], p[1], top + 0.01], [0.2, 0.15, 0.02], blk, yaw=yaw, name="stand")
        B.box([p[0], p[1], top + 0.1], [0.04, 0.03, 0.18], blk, yaw=yaw, name="stand")
        B.box([p[0], p[1], top + 0.12 + h / 2], [w, 0.03, h], blk, yaw=yaw, name="monitor")
        q = _local_to_world(p, yaw, 0, 0.016)
        scr = B.material("image" if B.image_files else "poster", 1.0, emission=0.0)
        B.box([q[0], q[1], top + 0.12 + h / 2], [w - 0.03, 0.002, h - 0.03], scr, yaw=yaw, face=True, name="screen", crop=True)
        top += 0.12 + h
    elif kind == "keyboard":
        B.box([p[0], p[1], top + 0.012], [0.44, 0.14, 0.024], B.material("keys", 0.5), yaw=yaw, face=True, name="keyboard")
        top += 0.024
    elif kind == "laptop":
        w, d = 0.33, 0.23
        body = B.plain(np.array(tx.NEUTRALS[int(rng.integers(4))]), 0.3, specular=0.3)
        B.box([p[0], p[1], top + 0.01], [w, d, 0.02], body, yaw=yaw, name="laptop")
        kb = _local_to_world(p, yaw, 0, 0.02)
        B.box([kb[0], kb[1], top + 0.0205], [w - 0.04, d * 0.5, 0.002], B.material("keys", 0.5), yaw=yaw, face=True, name="keys")
        ang = float(rng.uniform(0.2, 0.5))  # screen opened back by ang from vertical
        hc = _local_to_world(p, yaw, 0, -d / 2 - math.sin(ang) * d / 2)
        B.box([hc[0], hc[1], top + 0.02 + math.cos(ang) * d / 2], [w, 0.01, d], body, yaw=yaw, tilt=-ang, name="lid")
        sc = _local_to_world(p, yaw, 0, -d / 2 - math.sin(ang) * d / 2 + 0.0055 * math.cos(ang))
        B.box([sc[0], sc[1], top + 0.02 + math.cos(ang) * d / 2 + 0.0055 * math.sin(ang)], [w - 0.03, 0.001, d - 0.03],
              B.material("image" if B.image_files else "poster", 1.0), yaw=yaw, tilt=-ang, face=True, name="screen", crop=True)
        top += 0.02 + d
    elif kind == "lamp":
        base = B.plain(tx.room_colour(rng), 0.3, specular=0.3)
        B.cylinder([p[0], p[1], top], 0.07, 0.02, base, name="lampbase")
        B.cylinder([p[0], p[1], top + 0.02], 0.008, 0.3, base, name="lamppole")
        B.cylinder([p[0], p[1], top + 0.28], 0.11, 0.14, B.material("fabric", 0.2), name="lampshade")
        top += 0.42
    elif kind == "frame":  # standing photo frame
        fw, fh = rng.uniform(0.1, 0.2), rng.uniform(0.13, 0.25)
        fm = B.plain(tx.NEUTRALS[int(rng.integers(len(tx.NEUTRALS)))], 0.3, specular=0.2)
        B.box([p[0], p[1], top + fh / 2], [fw, 0.015, fh], fm, yaw=yaw, tilt=0.15, name="frame")
        q = _local_to_world(p, yaw, 0, 0.008)
        B.box([q[0], q[1], top + fh / 2], [fw * 0.8, 0.002, fh * 0.8], B.material("image" if B.image_files else "poster", 1.0),
              yaw=yaw, tilt=0.15, face=True, name="photo", crop=True)
        top += fh
    if on_floor:
        B.obstacles.append(Obstacle(np.array([p[0], p[1], top / 2]), 0.0, np.array([size, size, top / 2]), kind))
