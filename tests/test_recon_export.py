"""Exports of an aligned reconstruction read back: PLY/mesh (open3d), GLB (trimesh), COLMAP, nerfstudio."""

from __future__ import annotations

import json

import numpy as np
import open3d as o3d
import pytest
import torch
import trimesh

from vibe3r import geometry
from vibe3r.captures import load_capture
from vibe3r.recon import export as X
from vibe3r.recon.align import Alignment
from vibe3r.recon.synthetic import box_room_video

N, H, W = 5, 48, 64




@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    gt = box_room_video(1, n_frames=N, H=H, W=W, step=0.1)
    conf = np.full((N, H, W), 3.0, np.float32)
    conf[:, :4] = 1.0  # a low-confidence band at the top of every frame: filtered out
    al = Alignment(c2w=gt.c2w.copy(), K=gt.K.copy(), depth=gt.depth.copy(), conf=conf, pair_scale=np.ones(1),
                   pair_pose=np.eye(4)[None])
    out = tmp_path_factory.mktemp("export")
    info = X.export_all(out, al, gt.images, [f"f{i}" for i in range(N)], conf_quantile=0.1)
    return gt, al, out, info


def test_every_export_is_written(exported):
    _, _, out, info = exported
    for name in ("scene.ply", "scene.glb", "mesh.ply", "cameras.json", "transforms.json", "colmap/cameras.txt",
                 "colmap/images.txt", "colmap/points3D.txt", "depth/00000.npy", "depth/00004.png", "images/00004.png"):
        assert (out / name).is_file(), name
    assert info["points"] > 100 and info["mesh_triangles"] > 100
    assert info["confident_fraction"] == pytest.approx(1 - 4 / H)


def test_point_cloud_is_coloured_confident_and_on_the_surfaces(exported):
    gt, al, out, info = exported
    pc = o3d.io.read_point_cloud(str(out / "scene.ply"))
    P = np.asarray(pc.points)
    assert len(P) == info["points"] and pc.has_colors()
    dense = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(al.points()[al.depth > 0].reshape(-1, 3)))
    d = np.asarray(pc.compute_point_cloud_distance(dense))
    assert np.median(d) < info["voxel"]  # voxel averages stay on the surfaces
    # the filtered top rows of every frame are not in the cloud: project back into camera 0
    X0 = geometry.transform_points(geometry.inv_pose(torch.from_numpy(gt.c2w[0])), torch.from_numpy(P))
    uv, z = geometry.project(X0, torch.from_numpy(gt.K[0]))
    inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
    assert (uv[inside, 1] < 2.5).float().mean() < 0.02


def test_glb_opens_as_a_gltf_scene_with_points_and_one_frustum_per_camera(exported):
    gt, _, out, _ = exported
    assert (out / "scene.glb").read_bytes()[:4] == b"glTF"
    scene = trimesh.load(out / "scene.glb")
    kinds = [type(g).__name__ for g in scene.geometry.values()]
    assert kinds.count("PointCloud") == 1 and kinds.count("Trimesh") == N
    # the first frustum's apex is camera 0's centre in glTF axes (y, z negated)
    frusta = [g for g in scene.dump() if isinstance(g, trimesh.Trimesh)]
    apexes = np.array([f.vertices[0] for f in frusta])
    c0 = gt.c2w[0, :3, 3] * np.array([1, -1, -1])
    assert np.min(np.linalg.norm(apexes - c0, axis=1)) < 1e-5


def test_tsdf_mesh_lies_on_the_scene(exported):
    _, al, out, _ = exported
    mesh = o3d.io.read_triangle_mesh(str(out / "mesh.ply"))
    assert len(mesh.triangles) > 100 and mesh.has_vertex_colors()
    dense = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(al.points()[al.depth > 0].reshape(-1, 3)))
    verts = o3d.geometry.PointCloud(mesh.vertices)
    assert np.median(np.asarray(verts.compute_point_cloud_distance(dense))) < 2 * X.pixel_footprint(al)


def test_nerfstudio_export_reads_back_with_the_same_cameras_images_and_depth(exported):
    gt, al, out, _ = exported
    cap = load_capture(out / "transforms.json")
    assert cap.source == "nerfstudio" and len(cap) == N
    assert np.allclose(cap.cam2world, al.c2w, atol=1e-9)
    assert np.allclose(cap.K, al.K, atol=1e-9)
    assert np.array_equal(cap.images, gt.images)
    ok = gt.depth[:, 4:] > 0
    assert np.abs(cap.depth[:, 4:][ok] - gt.depth[:, 4:][ok]).max() <= 0.5e-3 + 1e-6  # 16-bit mm
    assert (cap.depth[:, :4] == 0).all()  # filtered pixels carry no depth
    doc = json.loads((out / "transforms.json").read_text())
    assert doc["cx"] == pytest.approx(gt.K[0, 0, 2] + 0.5)  # nerfstudio pixel centres at +0.5


def test_colmap_export_stores_world_to_camera_and_reads_back(exported):
    gt, al, out, _ = exported
    names, K, c2w, hw = X.read_colmap_text(out / "colmap")
    assert names == [f"{i:05d}.png" for i in range(N)] and hw == (H, W)
    assert np.allclose(c2w, al.c2w, atol=1e-9) and np.allclose(K, al.K, atol=1e-9)
    # independent check of the convention: COLMAP projects a world point with R(q) X + t
    tok = (out / "colmap/images.txt").read_text().splitlines()[4].split()
    qw, qx, qy, qz, tx, ty, tz = map(float, tok[1:8])
    R = np.array([[1 - 2 * (qy**2 + qz**2), 2 * (qx * qy - qz * qw), 2 * (qx * qz + qy * qw)],
                  [2 * (qx * qy + qz * qw), 1 - 2 * (qx**2 + qz**2), 2 * (qy * qz - qx * qw)],
                  [2 * (qx * qz - qy * qw), 2 * (qy * qz + qx * qw), 1 - 2 * (qx**2 + qy**2)]])
    Xw = al.points()[0, 20, 30]
    Xc = R @ Xw + np.array([tx, ty, tz])
    cam = (out / "colmap/cameras.txt").read_text().splitlines()[3].split()
    fx, fy, cx, cy = map(float, cam[4:8])
    assert np.allclose([fx * Xc[0] / Xc[2] + cx, fy * Xc[1] / Xc[2] + cy], [30.5, 20.5], atol=1e-6)
    n_pts = len([ln for ln in (out / "colmap/points3D.txt").read_text().splitlines() if not ln.startswith("#")])
    assert n_pts == len(o3d.io.read_point_cloud(str(out / "scene.ply")).points)


def test_cameras_json_and_depth_files(exported):
    gt, al, out, _ = exported
    doc = json.loads((out / "cameras.json").read_text())
    assert [f["name"] for f in doc["frames"]] == [f"f{i}" for i in range(N)]
    assert np.allclose(np.array(doc["frames"][2]["cam2world"]), gt.c2w[2]) and np.allclose(doc["frames"][2]["K"], gt.K[2])
    d = np.load(out / "depth/00002.npy")
    assert d.dtype == np.float32 and d.shape == (H, W) and np.allclose(d[4:], gt.depth[2, 4:])


def test_normalize_scale_sets_the_median_depth_to_one(exported):
    gt, _, _, _ = exported
    al = Alignment(c2w=gt.c2w.copy(), K=gt.K.copy(), depth=gt.depth * 3, conf=np.ones((N, H, W), np.float32),
                   pair_scale=np.ones(1), pair_pose=np.eye(4)[None])
    s = X.normalize_scale(al)
    assert np.median(al.depth[al.depth > 0]) == pytest.approx(1.0, rel=1e-6)
    assert np.allclose(al.c2w[:, :3, 3], gt.c2w[:, :3, 3] * s)


def test_tsdf_fusion_skips_frames_with_nothing_to_fuse(exported):
    """A frame whose depth is entirely masked out (e.g. all low confidence) must not abort the fusion."""
    gt, al, _, _ = exported
    mask = al.depth > 0
    mask[2] = False  # frame 2 contributes nothing
    mesh = X.tsdf_mesh(al, gt.images, mask, 2 * X.pixel_footprint(al))
    assert len(mesh.triangles) > 100
