"""Exports of an aligned reconstruction: point cloud, glTF scene, TSDF mesh, cameras, COLMAP, nerfstudio, depth.

Conventions of what is written (vibe3r's are OpenCV axes, camera-to-world, pixel centres at integers):

* ``scene.ply``   coloured world points of confident pixels, voxel-downsampled (open3d).
* ``scene.glb``   the same points plus one frustum per camera (glTF binary via trimesh). glTF is
  y-up with cameras looking down −z, so the whole scene is turned by diag(1, −1, −1) (OpenCV → OpenGL
  axes of the world): camera 0 then looks into the screen with its image upright.
* ``mesh.ply``    TSDF fusion (open3d ``VoxelBlockGrid``) of the confident depth maps and colours.
* ``cameras.json`` per frame: name, image size, K (vibe3r convention), camera-to-world (OpenCV axes).
* ``colmap/``     COLMAP text model: ``cameras.txt`` (PINHOLE; COLMAP puts pixel centres at +0.5, so
  c = c_vibe3r + 0.5), ``images.txt`` (**world-to-camera** quaternion QW QX QY QZ and translation),
  ``points3D.txt`` (the downsampled points, empty tracks).
* ``transforms.json`` + ``images/`` nerfstudio: camera-to-world in OpenGL camera axes (y and z columns
  negated), fl/cx/cy with pixel centres at +0.5, ``depth_file_path`` to 16-bit depth PNGs
  (value / 1000 = scene units, nerfstudio's default depth scale).
* ``depth/NNNNN.npy`` float32 z-depth (0 where not confident) and ``depth/NNNNN.png`` (uint16, 1/1000
  units), ``conf/NNNNN.npy`` the per-pixel confidence.

Reconstructions are up to scale; ``normalize_scale`` fixes the median depth to 1 scene unit first.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import roma
import torch

from vibe3r import geometry
from vibe3r.captures import GL_TO_CV
from vibe3r.errors import InputError
from vibe3r.recon.align import Alignment

CV_TO_GLTF_WORLD = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV-axes world -> y-up glTF world
DEPTH_PNG_SCALE = 1000.0  # depth PNG value = depth * 1000


def normalize_scale(al: Alignment) -> float:
    """Scale the reconstruction in place so that the median of all positive depths is 1; returns the factor."""
    pos = al.depth[al.depth > 0]
    if len(pos) == 0:
        raise InputError("the reconstruction has no valid depth")
    s = 1.0 / float(np.median(pos))
    al.depth = (al.depth * s).astype(np.float32)
    al.c2w = al.c2w.copy()
    al.c2w[:, :3, 3] *= s
    al.pair_pose = al.pair_pose.copy()
    al.pair_scale = al.pair_scale * s
    return s


def confidence_mask(conf: np.ndarray, depth: np.ndarray, quantile: float = 0.2, min_conf: float | None = None) -> np.ndarray:
    """Pixels (N,H,W) with depth whose confidence is at least the ``quantile`` of all confidences with
    depth (and at least ``min_conf`` when given)."""
    valid = depth > 0
    if not valid.any():
        return valid
    thr = float(np.quantile(conf[valid], quantile)) if quantile > 0 else -np.inf
    if min_conf is not None:
        thr = max(thr, min_conf)
    return valid & (conf >= thr)


def pixel_footprint(al: Alignment) -> float:
    """Size of one pixel at the median depth (scene units): the natural voxel size."""
    pos = al.depth[al.depth > 0]
    return float(np.median(pos) / np.median(al.K[:, 0, 0])) if len(pos) else 1e-2


def scene_points(al: Alignment, images: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points (M,3) float64 and colours (M,3) uint8 of the masked pixels of every frame."""
    X = al.points()  # N,H,W,3
    return X[mask], images[mask]


def point_cloud(points: np.ndarray, colors: np.ndarray, voxel: float | None):  # noqa: ANN201 - open3d type
    """An open3d point cloud, voxel-downsampled when ``voxel`` > 0 (colours averaged per voxel)."""
    import open3d as o3d

    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.ascontiguousarray(points, np.float64)))
    pc.colors = o3d.utility.Vector3dVector(np.ascontiguousarray(colors, np.float64) / 255.0)
    if voxel and voxel > 0 and len(points):
        pc = pc.voxel_down_sample(voxel)
    return pc


def write_ply(path: Path, pc) -> Path:  # noqa: ANN001
    import open3d as o3d

    if not o3d.io.write_point_cloud(str(path), pc):
        raise OSError(f"open3d could not write {path}")
    return path


def frustum_mesh(c2w: np.ndarray, K: np.ndarray, hw: tuple[int, int], size: float, color: Sequence[int]):  # noqa: ANN201
    """A camera frustum (trimesh) in world coordinates: apex at the centre, base = the image corners at
    z-depth ``size``; 4 side faces + the image rectangle (2 triangles), both windings (no culling)."""
    import trimesh

    H, W = hw
    corners = np.array([[-0.5, -0.5], [W - 0.5, -0.5], [W - 0.5, H - 0.5], [-0.5, H - 0.5]])
    Kinv = np.linalg.inv(K)
    base = (np.c_[corners, np.ones(4)] @ Kinv.T) * size  # 4,3 camera frame
    v = np.r_[np.zeros((1, 3)), base]
    v = v @ c2w[:3, :3].T + c2w[:3, 3]
    f = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 4], [0, 4, 1], [1, 2, 3], [1, 3, 4]])
    f = np.r_[f, f[:, ::-1]]
    return trimesh.Trimesh(vertices=v, faces=f, face_colors=np.tile(np.r_[color, 255][None], (len(f), 1)), process=False)


def write_glb(path: Path, points: np.ndarray, colors: np.ndarray, c2w: np.ndarray, K: np.ndarray,
              hw: tuple[int, int], frustum_size: float) -> Path:
    """Points + camera frusta as a glTF binary (world turned into glTF's y-up axes, see module doc)."""
    import trimesh

    T = CV_TO_GLTF_WORLD
    scene = trimesh.Scene()
    if len(points):
        rgba = np.c_[colors, np.full(len(colors), 255)].astype(np.uint8)
        scene.add_geometry(trimesh.PointCloud(points @ T[:3, :3].T, colors=rgba), node_name="points")
    n = len(c2w)
    for i in range(n):
        t = i / max(n - 1, 1)  # first camera blue, last red
        color = (int(255 * t), 64, int(255 * (1 - t)))
        scene.add_geometry(frustum_mesh(T @ c2w[i], K[i], hw, frustum_size, color), node_name=f"camera_{i:05d}")
    path.write_bytes(scene.export(file_type="glb"))
    return path


def tsdf_mesh(al: Alignment, images: np.ndarray, mask: np.ndarray, voxel: float, depth_trunc: float | None = None,
              weight_threshold: float = 1.0):  # noqa: ANN201 - open3d type
    """TSDF fusion of the masked depth maps with their colours -> an open3d (legacy) TriangleMesh.

    open3d's tensor ``VoxelBlockGrid`` (truncation 4 voxels, blocks of 8³ voxels); marching cubes on
    voxels observed with weight >= ``weight_threshold``. (The legacy ``ScalableTSDFVolume`` of the
    open3d 0.20 wheel returns empty meshes even for a fronto-parallel plane, hence the tensor API.)
    """
    import open3d as o3d
    import open3d.core as o3c

    N, H, W = al.depth.shape
    pos = al.depth[mask]
    if depth_trunc is None:
        depth_trunc = float(np.quantile(pos, 0.99)) * 1.5 if len(pos) else 1.0
    vbg = o3d.t.geometry.VoxelBlockGrid(attr_names=("tsdf", "weight", "color"), attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
                                        attr_channels=(1, 1, 3), voxel_size=float(voxel), block_resolution=8, block_count=1000)  # the hash map grows
    for n in range(N):
        dn = np.where(mask[n], al.depth[n], 0)
        if not ((dn > 0) & (dn < depth_trunc)).any():
            continue  # nothing to fuse from this frame (open3d aborts on a frame that touches no block)
        d = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(dn, dtype=np.float32)))
        c = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(images[n], dtype=np.float32) / 255.0))
        K = o3c.Tensor(np.ascontiguousarray(al.K[n], dtype=np.float64))
        ext = o3c.Tensor(np.ascontiguousarray(np.linalg.inv(al.c2w[n]), dtype=np.float64))
        try:
            blocks = vbg.compute_unique_block_coordinates(d, K, ext, depth_scale=1.0, depth_max=depth_trunc, trunc_voxel_multiplier=4.0)
        except RuntimeError:  # open3d aborts when the frame's sparse depth touches no voxel block: skip the frame
            continue
        vbg.integrate(blocks, d, c, K, K, ext, depth_scale=1.0, depth_max=depth_trunc, trunc_voxel_multiplier=4.0)
    mesh = vbg.extract_triangle_mesh(weight_threshold=weight_threshold).to_legacy()
    mesh.compute_vertex_normals()
    return mesh


def write_cameras_json(path: Path, names: Sequence[str], K: np.ndarray, c2w: np.ndarray, hw: tuple[int, int],
                       extra: dict | None = None) -> Path:
    H, W = hw
    frames = [{"name": names[i], "width": W, "height": H, "K": K[i].tolist(), "cam2world": c2w[i].tolist()}
              for i in range(len(names))]
    doc = {"convention": "OpenCV camera axes (x right, y down, z forward); cam2world 4x4; K in pixels with "
                         "pixel centres at integer coordinates", **(extra or {}), "frames": frames}
    path.write_text(json.dumps(doc, indent=1))
    return path


# --------------------------------------------------------------------------------------------
# COLMAP text model
# --------------------------------------------------------------------------------------------


def _camera_groups(K: np.ndarray) -> tuple[list[np.ndarray], list[int]]:
    """Distinct intrinsics and each frame's (1-based) camera id."""
    cams: list[np.ndarray] = []
    ids = []
    for k in K:
        for j, c in enumerate(cams):
            if np.allclose(c, k, rtol=0, atol=1e-9):
                ids.append(j + 1)
                break
        else:
            cams.append(k)
            ids.append(len(cams))
    return cams, ids


def write_colmap_text(out_dir: Path, names: Sequence[str], K: np.ndarray, c2w: np.ndarray, hw: tuple[int, int],
                      points: np.ndarray | None = None, colors: np.ndarray | None = None) -> Path:
    """``cameras.txt``, ``images.txt``, ``points3D.txt`` (see the module docstring for conventions)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    H, W = hw
    cams, ids = _camera_groups(K)
    lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
             f"# Number of cameras: {len(cams)}"]
    for j, k in enumerate(cams):
        lines.append(f"{j + 1} PINHOLE {W} {H} {k[0, 0]:.10g} {k[1, 1]:.10g} {k[0, 2] + 0.5:.10g} {k[1, 2] + 0.5:.10g}")
    (out_dir / "cameras.txt").write_text("\n".join(lines) + "\n")
    w2c = geometry.inv_pose(torch.from_numpy(c2w)).numpy()
    q = roma.rotmat_to_unitquat(torch.from_numpy(w2c[:, :3, :3])).numpy()  # xyzw
    lines = ["# Image list with two lines of data per image:", "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
             "#   POINTS2D[] as (X, Y, POINT3D_ID)", f"# Number of images: {len(names)}"]
    for i, name in enumerate(names):
        qx, qy, qz, qw = q[i]
        if qw < 0:  # COLMAP's canonical sign
            qx, qy, qz, qw = -qx, -qy, -qz, -qw
        t = w2c[i, :3, 3]
        lines.append(f"{i + 1} {qw:.12g} {qx:.12g} {qy:.12g} {qz:.12g} {t[0]:.12g} {t[1]:.12g} {t[2]:.12g} {ids[i]} {name}")
        lines.append("")
    (out_dir / "images.txt").write_text("\n".join(lines) + "\n")
    lines = ["# 3D point list with one line of data per point:", "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)"]
    if points is not None and colors is not None:
        lines += [f"{i + 1} {p[0]:.7g} {p[1]:.7g} {p[2]:.7g} {c[0]} {c[1]} {c[2]} 0" for i, (p, c) in enumerate(zip(points, colors))]
    (out_dir / "points3D.txt").write_text("\n".join(lines) + "\n")
    return out_dir


def read_colmap_text(model_dir: Path) -> tuple[list[str], np.ndarray, np.ndarray, tuple[int, int]]:
    """Read a PINHOLE/SIMPLE_PINHOLE COLMAP text model -> (names, K (N,3,3) vibe3r convention, c2w (N,4,4), (H, W))."""
    cams = {}
    hw = (0, 0)
    for line in (model_dir / "cameras.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        tok = line.split()
        cid, model, W, H, params = int(tok[0]), tok[1], int(tok[2]), int(tok[3]), [float(x) for x in tok[4:]]
        if model == "PINHOLE":
            fx, fy, cx, cy = params[:4]
        elif model == "SIMPLE_PINHOLE":
            fx, cx, cy = params[:3]
            fy = fx
        else:
            raise InputError(f"{model_dir}/cameras.txt: camera model {model} is not supported (PINHOLE, SIMPLE_PINHOLE)")
        cams[cid] = np.array([[fx, 0, cx - 0.5], [0, fy, cy - 0.5], [0, 0, 1.0]])
        hw = (H, W)
    names, Ks, c2ws = [], [], []
    lines = [ln for ln in (model_dir / "images.txt").read_text().splitlines() if not ln.startswith("#")]
    for line in lines[::2]:
        tok = line.split()
        if len(tok) < 10:
            continue
        qw, qx, qy, qz, tx, ty, tz = (float(x) for x in tok[1:8])
        R = roma.unitquat_to_rotmat(torch.tensor([qx, qy, qz, qw], dtype=torch.float64)).numpy()
        w2c = np.eye(4)
        w2c[:3, :3], w2c[:3, 3] = R, [tx, ty, tz]
        names.append(tok[9])
        Ks.append(cams[int(tok[8])])
        c2ws.append(np.linalg.inv(w2c))
    return names, np.stack(Ks), np.stack(c2ws), hw


# --------------------------------------------------------------------------------------------
# nerfstudio, depth maps
# --------------------------------------------------------------------------------------------


def write_depth_maps(out_dir: Path, depth: np.ndarray, conf: np.ndarray | None = None) -> list[Path]:
    """``depth/NNNNN.npy`` (float32), ``depth/NNNNN.png`` (uint16, value/1000 = units) and ``conf/NNNNN.npy``."""
    d_dir = out_dir / "depth"
    d_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, d in enumerate(depth):
        np.save(d_dir / f"{i:05d}.npy", d.astype(np.float32))
        png = np.clip(np.round(d * DEPTH_PNG_SCALE), 0, 65535).astype(np.uint16)
        cv2.imwrite(str(d_dir / f"{i:05d}.png"), png)
        paths.append(d_dir / f"{i:05d}.png")
    if conf is not None:
        c_dir = out_dir / "conf"
        c_dir.mkdir(exist_ok=True)
        for i, c in enumerate(conf):
            np.save(c_dir / f"{i:05d}.npy", c.astype(np.float32))
    return paths


def write_nerfstudio(out_dir: Path, images: np.ndarray, K: np.ndarray, c2w: np.ndarray,
                     depth_pngs: Sequence[Path] | None = None) -> Path:
    """``transforms.json`` + ``images/NNNNN.png`` (see the module docstring for conventions)."""
    img_dir = out_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    N, H, W = images.shape[:3]
    shared = bool(np.allclose(K, K[0]))
    intr = lambda k: {"fl_x": float(k[0, 0]), "fl_y": float(k[1, 1]), "cx": float(k[0, 2] + 0.5), "cy": float(k[1, 2] + 0.5)}  # noqa: E731
    frames = []
    for i in range(N):
        p = img_dir / f"{i:05d}.png"
        cv2.imwrite(str(p), cv2.cvtColor(images[i], cv2.COLOR_RGB2BGR))
        f = {"file_path": f"images/{p.name}", "transform_matrix": (c2w[i] @ GL_TO_CV).tolist()}
        if not shared:
            f.update(intr(K[i]))
        if depth_pngs is not None:
            f["depth_file_path"] = str(Path(depth_pngs[i]).relative_to(out_dir))
        frames.append(f)
    doc = {"camera_model": "OPENCV", "w": W, "h": H, "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0}
    if shared:
        doc.update(intr(K[0]))
    doc["frames"] = frames
    path = out_dir / "transforms.json"
    path.write_text(json.dumps(doc, indent=1))
    return path


# --------------------------------------------------------------------------------------------
# Everything
# --------------------------------------------------------------------------------------------


def export_all(out_dir: str | Path, al: Alignment, images: np.ndarray, names: Sequence[str], *, conf_quantile: float = 0.2,
               min_conf: float | None = None, voxel: float | None = None, tsdf_voxel: float | None = None,
               mesh: bool = True, extra_cameras: dict | None = None) -> dict[str, object]:
    """Write every export of the module docstring into ``out_dir``; returns counts and paths.

    ``voxel`` (point cloud) defaults to one pixel footprint at the median depth, ``tsdf_voxel`` to two.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    N, H, W = al.depth.shape
    mask = confidence_mask(al.conf, al.depth, conf_quantile, min_conf)
    foot = pixel_footprint(al)
    voxel = foot if voxel is None else voxel
    pts, cols = scene_points(al, images, mask)
    pc = point_cloud(pts, cols, voxel)
    write_ply(out / "scene.ply", pc)
    P = np.asarray(pc.points)
    C = np.round(np.asarray(pc.colors) * 255).astype(np.uint8)
    centres = al.c2w[:, :3, 3]
    extent = float(np.linalg.norm(np.ptp(P, 0))) if len(P) else 1.0
    write_glb(out / "scene.glb", P, C, al.c2w, al.K, (H, W), frustum_size=0.05 * max(extent, 1e-6))
    n_vertices = n_triangles = 0
    if mesh:
        import open3d as o3d

        m = tsdf_mesh(al, images, mask, 2 * foot if tsdf_voxel is None else tsdf_voxel)
        if len(m.triangles):  # open3d refuses to write an empty mesh; the count says why it is missing
            o3d.io.write_triangle_mesh(str(out / "mesh.ply"), m)
        n_vertices, n_triangles = len(m.vertices), len(m.triangles)
    write_cameras_json(out / "cameras.json", names, al.K, al.c2w, (H, W), extra_cameras)
    write_colmap_text(out / "colmap", [f"{i:05d}.png" for i in range(N)], al.K, al.c2w, (H, W), P, C)
    depth_f = np.where(mask, al.depth, 0).astype(np.float32)
    pngs = write_depth_maps(out, depth_f, al.conf)
    write_nerfstudio(out, images, al.K, al.c2w, pngs)
    return {"points": int(len(P)), "points_before_voxel": int(len(pts)), "voxel": float(voxel),
            "mesh_vertices": n_vertices, "mesh_triangles": n_triangles, "confident_fraction": float(mask.mean()),
            "camera_path_length": float(np.linalg.norm(np.diff(centres, axis=0), axis=1).sum())}
