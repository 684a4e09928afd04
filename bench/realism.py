"""Does a feature matcher see rendered rooms like real ones? SIFT on rendered vs real pairs.

Classical pipeline (SuperGlue's baseline): OpenCV SIFT (8000 features) + Lowe ratio 0.8 +
``findEssentialMat`` RANSAC (1 px) + ``recoverPose``. Figures per pair set: matches (median),
RANSAC inliers (median), failure rate, AUC@5/10/20 of max(rotation, translation-direction) error
(translation sign ignored, failures = infinite error), median rotation error.

* real:     ``/work/shared/data/real/eval-pairs/*.txt`` (7-Scenes redkitchen second half, TUM
            fr3/long_office), images resized to the rendered resolution, K rescaled.
* rendered: pairs in procedural rooms (seeds 500+) with the *same relative poses* as the real
            pairs (``--motion real``, default: pair k reuses real pair k's T_0to1): camera 0 at
            1.1-1.7 m in free space aimed at an object (75 %) or looking slightly down, 0.8-3 m from
            what it sees (the real captures' median depth is 1.8-2.4 m), camera 1 = c2w_0 inv(T_0to1),
            redrawn until camera 1 is in free space, both views have ≥ 25 % of a 5x4 ray grid on
            objects rather than bare walls/floor/ceiling (``--min-thing``; the share of candidate
            pairs this redraws is printed) and co-visibility ≥ 0.3. ``--motion lookat``: a synthetic
            handheld model instead. Each frame gets handheld motion blur (random shutter motion),
            auto-exposure, vignetting and noise (``degrade``).

Also printed: the failure rate's 95 % Wilson interval, Fisher's exact test of rendered vs real
failure counts, and the share of rendered pairs whose less textured view has a lower mean
gradient magnitude than any real pair's. Results and the failure analysis: bench/realism.md.

    TD=/work/shared/data/real/tum-fr3-long-office/static-rgbd/rgb
    OMP_NUM_THREADS=1 .venv/bin/python bench/realism.py --sizes 128x96 256x192 --texture-dirs $TD --dump-failures bench/out/realism_fail
    .venv/bin/python bench/realism.py --sizes 128x96 --min-thing 0     # the bench before the content criterion
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from scipy.stats import fisher_exact

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vibe3r import geometry  # noqa: E402
from vibe3r.captures import load_pair_images, load_pairs  # noqa: E402
from vibe3r.config import Config, load_config  # noqa: E402
from vibe3r.eval.pairs import sift_matches  # noqa: E402
from vibe3r.recon.pose import estimate_pose_essential  # noqa: E402
from vibe3r.video_gen import degrade  # noqa: E402
from vibe3r.video_gen.render import render_frames  # noqa: E402
from vibe3r.video_gen.world import Scene, build_scene  # noqa: E402

REAL = Path("/work/shared/data/real")
REAL_LISTS = {
    "7scenes": REAL / "eval-pairs" / "7scenes-redkitchen-second-half.txt",
    "tum": REAL / "eval-pairs" / "tum-fr3-long-office-sequence.txt",
}


# --------------------------------------------------------------------------------------------
# the classical pipeline
# --------------------------------------------------------------------------------------------


def sift_pose(img0: np.ndarray, img1: np.ndarray, K0: np.ndarray, K1: np.ndarray, T_0to1: np.ndarray) -> dict:
    """Matches, inliers and pose errors of SIFT + essential-matrix RANSAC on one pair."""
    p0, p1 = sift_matches(img0, img1, 8000, 0.8)
    res = estimate_pose_essential(p0, p1, K0, K1, 1.0)
    out = {"matches": len(p0), "inliers": 0, "err": math.inf, "rot_err": math.inf, "failed": res is None,
           "grad": min(gradient_energy(img0), gradient_energy(img1))}
    if res is not None:
        R, t, mask = res
        e_r = float(geometry.rotation_error_deg(R, T_0to1[:3, :3]))
        e_t = float(geometry.translation_direction_error_deg(t, T_0to1[:3, 3], ignore_sign=True))
        out.update(inliers=int(mask.sum()), err=max(e_r, e_t), rot_err=e_r)
    return out


def gradient_energy(img: np.ndarray) -> float:
    """Mean Sobel gradient magnitude of the grey image (uint8 scale): ~15 for a bare wall."""
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)).mean())


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval (in %) of a rate k/n."""
    if n == 0:
        return 0.0, 100.0
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return 100.0 * max(0.0, c - h), 100.0 * min(1.0, c + h)


def summarise(rows: list[dict]) -> dict:
    """Medians, failure rate (with its 95 % Wilson interval) and AUC@5/10/20 with their bootstrap
    std (300 resamplings of the pairs); ``grad5``: 5th percentile of the pairs' gradient energy
    (the less textured view of each pair)."""
    err = np.array([r["err"] for r in rows])
    auc = geometry.pose_auc(err, (5, 10, 20))
    rng = np.random.default_rng(0)
    boot = np.array([geometry.pose_auc(err[rng.integers(len(err), size=len(err))], (5, 10, 20)) for _ in range(300)])
    return {
        "auc_std": boot.std(0).tolist(),
        "n": len(rows),
        "matches": float(np.median([r["matches"] for r in rows])),
        "inliers": float(np.median([r["inliers"] for r in rows])),
        "fail": 100.0 * float(np.mean([r["failed"] for r in rows])),
        "n_fail": int(sum(r["failed"] for r in rows)),
        "fail_ci": wilson(int(sum(r["failed"] for r in rows)), len(rows)),
        "grad5": float(np.percentile([r["grad"] for r in rows], 5)),
        "grads": [r["grad"] for r in rows],
        "auc5": auc[0], "auc10": auc[1], "auc20": auc[2],
        "rot_err": float(np.median([r["rot_err"] for r in rows])),
        "gt_rot": float(np.median([r["gt_rot"] for r in rows])),
        "baseline": float(np.median([r["baseline"] for r in rows])),
    }


def real_rows(name: str, width: int) -> list[dict]:
    rows = []
    for p in load_pairs(REAL_LISTS[name]):
        img0, img1, K0, K1, T = load_pair_images(p, size=width)
        r = sift_pose(img0, img1, K0, K1, T)
        r["gt_rot"] = float(geometry.rotation_error_deg(T[:3, :3], np.eye(3)))
        r["baseline"] = float(np.linalg.norm(T[:3, 3]))
        rows.append(r)
    return rows


# --------------------------------------------------------------------------------------------
# rendered pairs with handheld statistics
# --------------------------------------------------------------------------------------------


def _rot(axis: np.ndarray, deg: float) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(axis, np.float64) * math.radians(deg))[0]


def _camera(scene: Scene, rng: np.random.Generator, eye: np.ndarray, target: np.ndarray, roll_deg: float) -> np.ndarray:
    c2w = geometry.look_at(eye, target).numpy()
    c2w[:3, :3] = c2w[:3, :3] @ _rot([0, 0, 1], roll_deg)
    return c2w


def _centre_hit(scene: Scene, c2w: np.ndarray) -> tuple[float, np.ndarray]:
    o, d = c2w[:3, 3], c2w[:3, 2]
    t = float(scene.cast(o[None], d[None])["t_hit"][0])
    return t, o + t * d


def _inside(scene: Scene, p: np.ndarray) -> bool:
    Lx, Ly, H = scene.size
    return -0.05 < p[0] < Lx + 0.05 and -0.05 < p[1] < Ly + 0.05 and -0.05 < p[2] < H + 0.05


def real_motions() -> list[np.ndarray]:
    """``T_0to1`` (4,4) of every real evaluation pair: the rendered pairs reuse these exact motions."""
    return [p.T_0to1 for name in REAL_LISTS for p in load_pairs(REAL_LISTS[name])]


def _content_ok(scene: Scene, c0: np.ndarray, c1: np.ndarray, min_thing: float, stats: dict | None) -> bool:
    """Phone users film things: both views must have ≥ ``min_thing`` of their rays on objects.

    :meth:`Scene.view_content` (a 5x4 ray grid) gives the fraction of each view on objects rather
    than bare walls, floor or ceiling. Counted in ``stats`` (``candidates``, ``rejected``).
    """
    if min_thing <= 0:
        return True
    thing = scene.view_content(np.stack([c0[:3, 3], c1[:3, 3]]), np.stack([c0[:3, :3], c1[:3, :3]]))["thing"]
    ok = bool(thing.min() >= min_thing)
    if stats is not None:
        stats["candidates"] = stats.get("candidates", 0) + 1
        stats["rejected"] = stats.get("rejected", 0) + (not ok)
    return ok


def sample_pair(scene: Scene, rng: np.random.Generator, motion: np.ndarray | None = None,
                tries: int = 200, max_depth: float = 3.0, min_thing: float = 0.25,
                stats: dict | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Two camera poses of a handheld pair, or None if none found in ``tries``.

    Camera 0 stands at 1.1-1.7 m in free space, aimed at an object (75 %) or looking slightly
    down, 0.8 m to ``max_depth`` from what it sees (the real captures film things 1.5-2.5 m away). With ``motion`` (a real pair's ``T_0to1``) camera 1 is
    ``c2w_0 inv(T_0to1)``: exactly the real relative pose. Without, camera 1 is displaced by a
    log-normal baseline (median 0.3 m) and aimed at the same region (± 0.25 m), ±3° roll.
    A pair whose views are mostly bare room shell is redrawn (:func:`_content_ok`, ``min_thing``;
    0 disables): "an object" may be a ceiling lamp or a wall socket, and a phone user does not
    film a bare wall or ceiling from 1 m -- the real pairs never do.
    """
    Lx, Ly, H = scene.size
    shell = scene.arrays["geo_shell"]
    things = [np.asarray(p.mesh.get_center()) for p, sh in zip(scene.parts, shell, strict=True) if not sh]
    for _ in range(tries):
        eye0 = np.array([rng.uniform(0.3, Lx - 0.3), rng.uniform(0.3, Ly - 0.3), rng.uniform(1.1, 1.7)])
        if not scene.free_mask(eye0[None], 0.3)[0]:
            continue
        if things and rng.random() < 0.75:  # people film things: aim at an object
            fwd = things[int(rng.integers(len(things)))] + rng.normal(0, 0.15, 3) - eye0
            if np.linalg.norm(fwd) < 0.5 or fwd[2] / np.linalg.norm(fwd) < -0.8:
                continue
        else:
            yaw, pitch = rng.uniform(0, 2 * math.pi), math.radians(rng.uniform(-35, -5))
            fwd = np.array([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), math.sin(pitch)])
        c0 = _camera(scene, rng, eye0, eye0 + fwd, rng.normal(0, 3))
        t, X = _centre_hit(scene, c0)
        if not (0.8 < t < max_depth and _inside(scene, X)):
            continue
        if motion is not None:
            c1 = c0 @ np.linalg.inv(motion)
            t1, X1 = _centre_hit(scene, c1)
            if (scene.free_mask(c1[None, :3, 3], 0.3)[0] and 0.5 < t1 < 6.0 and _inside(scene, X1)
                    and _content_ok(scene, c0, c1, min_thing, stats)):
                return c0, c1
            continue
        b = float(np.clip(rng.lognormal(math.log(0.3), 0.5), 0.05, 1.0))
        a = rng.uniform(0, 2 * math.pi)
        dirn = np.array([math.cos(a), math.sin(a), rng.normal(0, 0.3)])
        eye1 = eye0 + b * dirn / np.linalg.norm(dirn)
        if not scene.free_mask(eye1[None], 0.3)[0]:
            continue
        c1 = _camera(scene, rng, eye1, X + rng.normal(0, 0.25, 3), rng.normal(0, 3))
        t1, X1 = _centre_hit(scene, c1)
        if not (0.5 < t1 < 6.0 and _inside(scene, X1)) or not _content_ok(scene, c0, c1, min_thing, stats):
            continue
        return c0, c1
    return None


def _handheld_shutter(c2w: np.ndarray, rng: np.random.Generator, fraction: float, bins: int) -> np.ndarray:
    """Shutter poses (bins,4,4) for a camera moving like a handheld phone at 30 Hz during exposure."""
    w = rng.normal(0, 0.6, 3)  # deg per frame
    v = rng.normal(0, 0.01, 3)  # m per frame
    seq = np.repeat(c2w[None], 3, 0)
    for k, s in ((0, -1), (2, 1)):
        seq[k, :3, :3] = c2w[:3, :3] @ _rot(w / max(np.linalg.norm(w), 1e-9), s * np.linalg.norm(w))
        seq[k, :3, 3] = c2w[:3, 3] + s * v
    return degrade.shutter_poses(seq, fraction, bins)[1]


def rendered_rows(cfg: Config, width: int, height: int, n_pairs: int, n_scenes: int, seed: int,
                  sheet: list | None = None, motion: str = "real", min_thing: float = 0.25,
                  stats: dict | None = None, dump: Path | None = None) -> tuple[list[dict], float]:
    """SIFT figures of ``n_pairs`` rendered pairs from ``n_scenes`` rooms (seeds 500+).

    ``motion="real"``: pair k uses the k-th real pair's relative pose (cycling through the 142);
    camera 0 is re-drawn until camera 1 is in free space, both views show things (``min_thing``,
    :func:`_content_ok`) and the pair's co-visibility is ≥ 0.3.
    ``motion="lookat"``: the synthetic handheld model of :func:`sample_pair`. ``stats`` counts the
    content rejections; ``dump``: folder for failed pairs (images over colour-mapped depth).
    """
    rows = []
    scenes: dict[int, Scene] = {}
    rc = cfg.render.model_copy(update={"width": width, "height": height})
    dc = rc.degrade
    bins = 8  # shutter time bins of the handheld blur
    t_render = 0.0
    motions = real_motions()
    k = 0
    while len(rows) < n_pairs:
        T_real = motions[len(rows) % len(motions)] if motion == "real" else None
        rng = np.random.default_rng([seed, k])
        sid = 500 + k % n_scenes
        k += 1
        if sid not in scenes:
            scenes[sid] = build_scene(sid, cfg.world)
        sc = scenes[sid]
        pair = sample_pair(sc, rng, T_real, min_thing=min_thing, stats=stats)
        if pair is None:
            continue
        K = geometry.intrinsics_from_fov(float(rng.uniform(55, 62)), width, height).numpy()
        c2w = np.stack(pair)
        t0 = time.perf_counter()
        shutter = np.stack([_handheld_shutter(c, rng, dc.motion_blur, bins) for c in c2w]) if dc.motion_blur > 0 else None
        hdr, depth = render_frames(sc, c2w, K, width, height, rc, seed=int(rng.integers(2**31)), shutter_c2w=shutter)
        imgs = [degrade.apply(hdr[i:i + 1], dc, seed=int(rng.integers(2**31)))[0] for i in range(2)]
        t_render += time.perf_counter() - t0
        T = geometry.relative_pose(c2w[0], c2w[1]).numpy()
        if geometry.covisibility(depth[0], depth[1], K, K, T, 0.05) < 0.3:
            continue
        r = sift_pose(imgs[0], imgs[1], K, K, T)
        r["gt_rot"] = float(geometry.rotation_error_deg(T[:3, :3], np.eye(3)))
        r["baseline"] = float(np.linalg.norm(T[:3, 3]))
        r["motion_index"] = (len(rows) % len(motions)) if motion == "real" else -1
        rows.append(r)
        if dump is not None and (r["failed"] or r["matches"] < 12):
            dump.mkdir(parents=True, exist_ok=True)
            dv = [cv2.applyColorMap(np.uint8(np.clip(d / 4.0 * 255, 0, 255)), cv2.COLORMAP_VIRIDIS) for d in depth]
            name = f"pair{len(rows) - 1:03d}_scene{sid}_m{r['matches']}{'_failed' if r['failed'] else ''}.png"
            cv2.imwrite(str(dump / name), np.vstack([np.hstack(imgs)[..., ::-1], np.hstack(dv)]))
        if sheet is not None and len(sheet) < 8:
            sheet.append(np.hstack(imgs))
    return rows, t_render


def _fmt(name: str, s: dict) -> str:
    sd = s["auc_std"]
    return (f"{name:<20} n={s['n']:3d}  matches {s['matches']:4.0f}  inliers {s['inliers']:4.0f}  fail {s['fail']:4.1f}%  "
            f"AUC@5/10/20 {s['auc5']:4.1f}±{sd[0]:.1f} / {s['auc10']:4.1f}±{sd[1]:.1f} / {s['auc20']:4.1f}±{sd[2]:.1f}  "
            f"med rot err {s['rot_err']:5.2f}°  [GT rot {s['gt_rot']:4.1f}°, baseline {s['baseline']:.2f} m]  "
            f"fail 95% CI {s['fail_ci'][0]:.1f}-{s['fail_ci'][1]:.1f}%  grad p5 {s['grad5']:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["128x96", "256x192"])
    ap.add_argument("--pairs", type=int, default=142, help="rendered pairs per setting (142 = each real motion once)")
    ap.add_argument("--motion", choices=["real", "lookat"], default="real",
                    help="rendered pairs reuse the real pairs' relative poses, or a synthetic handheld model")
    ap.add_argument("--scenes", type=int, default=30, help="distinct rooms the rendered pairs come from")
    ap.add_argument("--texture-dirs", nargs="*", default=None, help="also run with these image-texture sources")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides for the rendered side")
    ap.add_argument("--sheet", default="bench/out/realism_pairs.png", help="contact sheet of rendered pairs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-thing", type=float, default=0.25,
                    help="redraw rendered pairs with less than this fraction of either view on objects (0 = off, the old bench)")
    ap.add_argument("--dump-failures", default=None, help="write failed / <12-match rendered pairs here (one folder per setting)")
    args = ap.parse_args()
    cv2.setRNGSeed(0)
    settings = [("rendered", [])]
    if args.texture_dirs:
        settings.append(("rendered+photo-tex", [f"world.texture_dirs={args.texture_dirs!r}".replace("'", '"')]))
    for size in args.sizes:
        W, H = (int(x) for x in size.split("x"))
        print(f"=== {W}x{H} ===", flush=True)
        real, allr = {}, []
        for name in REAL_LISTS:
            rows = real_rows(name, W)
            allr += rows
            real[name] = summarise(rows)
            print(_fmt(f"real {name}", real[name]), flush=True)
        real["all"] = summarise(allr)
        print(_fmt("real (both lists)", real["all"]), flush=True)
        for label, extra in settings:
            cfg = load_config(None, [*args.set, *extra])
            sheet: list = []
            stats: dict = {}
            dump = Path(args.dump_failures) / f"{W}x{H}_{label}" if args.dump_failures else None
            rows, t = rendered_rows(cfg, W, H, args.pairs, args.scenes, args.seed, sheet, args.motion,
                                    args.min_thing, stats, dump)
            s = summarise(rows)
            print(_fmt(label, s) + f"  ({2 * len(rows) / t:.1f} frames/s)", flush=True)
            ra = real["all"]
            p_fail = fisher_exact([[s["n_fail"], s["n"] - s["n_fail"]], [ra["n_fail"], ra["n"] - ra["n_fail"]]])[1]
            g_min = min(ra["grads"])
            print(f"  failures {s['n_fail']}/{s['n']} vs real {ra['n_fail']}/{ra['n']} (Fisher exact p = {p_fail:.2f});  "
                  f"{100 * np.mean(np.array(s['grads']) < g_min):.1f}% of rendered pairs below the real pairs' minimum "
                  f"gradient energy {g_min:.0f};  content rejections {stats.get('rejected', 0)}/{stats.get('candidates', 0)} "
                  f"({100 * stats.get('rejected', 0) / max(stats.get('candidates', 0), 1):.0f}% of candidate pairs)", flush=True)
            ratios = {k: (s[k] + 1e-9) / (ra[k] + 1e-9) for k in ("matches", "inliers", "auc5", "auc10", "auc20")}
            print("  ratio rendered/real: " + "  ".join(f"{k} {v:.2f}" for k, v in ratios.items()), flush=True)
            if args.motion == "real":  # the rendered pairs that reuse each real list's motions, beside that list
                start = 0
                for name in REAL_LISTS:
                    n = real[name]["n"]
                    sub = summarise([r for r in rows if start <= r["motion_index"] < start + n])
                    start += n
                    print(f"  {name} motions: rendered AUC@5/10/20 {sub['auc5']:.1f} / {sub['auc10']:.1f} / {sub['auc20']:.1f}, "
                          f"fail {sub['n_fail']}/{sub['n']}  vs real {real[name]['auc5']:.1f} / {real[name]['auc10']:.1f} / "
                          f"{real[name]['auc20']:.1f}, fail {real[name]['n_fail']}/{real[name]['n']}", flush=True)
            if sheet:
                out = Path(args.sheet.replace(".png", f"_{W}x{H}_{label}.png"))
                out.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(out), np.vstack(sheet)[..., ::-1])


if __name__ == "__main__":
    main()
