"""``vibe3r serve``: the job queue survives restarts, uploads are judged by content and header limits, and a real
server on loopback runs a job end to end (tiny random network) while refusing bad input with one readable line."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import time
import zipfile

import numpy as np
import pytest
from _common import TINY_MODEL
from _serve import moving_frames, running_server
from PIL import Image

from vibe3r.captures import load_capture, write_capture_video
from vibe3r.config import ReconModelConfig
from vibe3r.errors import InputError
from vibe3r.recon.model import build_model
from vibe3r.serve import runjob
from vibe3r.serve import uploads as U
from vibe3r.serve.client import Client
from vibe3r.serve.config import Limits, ReconSettings, ServeConfig
from vibe3r.serve.jobs import JobStore

FAST = ReconSettings(size=64, max_frames=6, iters=5, pose="procrustes", mesh=True)  # no RANSAC on random weights


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt") / "tiny"
    build_model(ReconModelConfig(**TINY_MODEL)).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    frames = moving_frames(8)
    return {
        "good": write_capture_video(frames, d / "good.mp4", fps=10),
        "one": write_capture_video(frames[:1], d / "one.mp4", fps=10),
        "static": write_capture_video(np.stack([frames[0]] * 6), d / "static.mp4", fps=10),
        "black": write_capture_video(np.zeros((6, 48, 64, 3), np.uint8), d / "black.mp4", fps=10),
    }


def _cfg(tmp_path, ckpt, **limits) -> ServeConfig:
    return ServeConfig(data=tmp_path / "data", ckpt=ckpt, limits=Limits(**limits), recon=FAST)


def test_queue_survives_restart_and_running_jobs_are_requeued_then_given_up(tmp_path):
    store = JobStore(tmp_path / "q.db", max_attempts=2)
    a = store.create("1.2.3.4", "video", "a.mp4", 10, {}, contribute=True)
    b = store.create("1.2.3.4", "video", "b.mp4", 10, {}, contribute=False)
    assert store.claim()["id"] == a  # oldest first
    assert store.count_active("1.2.3.4") == 2 and store.count_active("5.6.7.8") == 0
    store2 = JobStore(tmp_path / "q.db", max_attempts=2)  # "the server restarted"
    assert store2.requeue_running() == [a]
    assert store2.get(a)["state"] == "queued" and store2.get(a)["contribute"] is True
    assert store2.claim()["id"] == a  # it kept its place ahead of b
    assert store2.requeue_running() == []  # second start of a: given up
    assert store2.get(a)["state"] == "failed" and "gave up after 2 attempts" in store2.get(a)["error"]
    assert store2.claim()["id"] == b and store2.claim() is None


@pytest.mark.parametrize("data, message", [
    (b"hello, I am a text file", "not a video or photo"),
    (b"", "empty"),
    (b"\x00\x00\x00\x18ftypisom" + b"\x00" * 200, "corrupt or truncated"),
])
def test_uploads_are_judged_by_content_not_name(tmp_path, data, message):
    with pytest.raises(InputError, match=message) as err:
        path, kind, _ = U.save_stream(io.BytesIO(data), tmp_path, "video", budget=10**6)
        U.check_video(path, Limits())
    assert "\n" not in str(err.value)


def test_video_header_checks(tmp_path, videos, monkeypatch):
    info = U.check_video(videos["good"], Limits())
    assert info["codec"] == "h264" and (info["width"], info["height"]) == (64, 48) and info["frames_in_header"] == 8
    portrait = write_capture_video(moving_frames(4, h=64, w=48), tmp_path / "portrait.mp4", display_rotation=-90)  # a phone upright
    info = U.check_video(portrait, Limits())
    assert (info["width"], info["height"], info["rotation"]) == (48, 64, -90)
    with pytest.raises(InputError, match="only 1 frame"):
        U.check_video(videos["one"], Limits())
    with pytest.raises(InputError, match="too long: 1 s, the limit is 0 s"):
        U.check_video(videos["good"], Limits(max_duration_s=0.5))
    with pytest.raises(InputError, match="too large: 64x48 pixels"):
        U.check_video(videos["good"], Limits(max_pixels=1000))
    half = tmp_path / "half.mp4"
    half.write_bytes(videos["good"].read_bytes()[: videos["good"].stat().st_size // 2])
    with pytest.raises(InputError, match="corrupt"):
        U.check_video(half, Limits())
    with pytest.raises(U.TooLarge, match="larger than the limit"):
        U.save_stream(io.BytesIO(videos["good"].read_bytes()), tmp_path / "x", "video", budget=1000)
    assert not list((tmp_path / "x").iterdir())  # nothing left behind
    monkeypatch.setattr(U, "_has_decoder", lambda name: False)
    with pytest.raises(InputError, match="unsupported video codec"):
        U.check_video(videos["good"], Limits())


def test_photo_checks_and_exif_orientation(tmp_path):
    img = Image.fromarray(moving_frames(1, h=48, w=64)[0])
    exif = Image.Exif()
    exif[U.EXIF_ORIENTATION] = 6  # stored sideways: shown rotated 90 degrees clockwise
    img.save(tmp_path / "side.jpg", exif=exif)
    assert U.check_photo(tmp_path / "side.jpg", Limits()) == (48, 64)  # rewritten upright
    with Image.open(tmp_path / "side.jpg") as im:
        assert im.size == (48, 64) and im.getexif().get(U.EXIF_ORIENTATION, 1) == 1
    img.save(tmp_path / "big.png")
    with pytest.raises(InputError, match="a photo is too large"):
        U.check_photo(tmp_path / "big.png", Limits(max_pixels=100))
    (tmp_path / "bad.jpg").write_bytes((tmp_path / "side.jpg").read_bytes()[:200])
    with pytest.raises(InputError, match="a photo is corrupt"):
        U.check_photo(tmp_path / "bad.jpg", Limits())


@pytest.mark.parametrize("fmt, codec, sniffed", [("webm", "libvpx-vp9", "webm"), ("mov", "libx264", "mov"), ("webm", "libvpx", "webm")])
def test_phone_formats_pass_the_upload_check_and_decode(tmp_path, fmt, codec, sniffed):
    import av

    from vibe3r.captures import load_capture

    path = tmp_path / f"clip.{fmt}"
    with av.open(str(path), "w", format=fmt) as c:
        st = c.add_stream(codec, rate=10)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        for f in moving_frames(6):
            for pkt in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)
    assert U.sniff(path.read_bytes()[:64]) == sniffed
    info = U.check_video(path, Limits())
    assert (info["width"], info["height"]) == (64, 48) and info["duration_s"] == pytest.approx(0.6)
    assert load_capture(path).images.shape == (6, 48, 64, 3)


@pytest.mark.parametrize("which, message", [("static", "camera does not move"), ("black", "all 6 frames are black")])
def test_static_and_black_videos_fail_the_job_with_a_readable_line(tmp_path, ckpt, videos, which, message):
    cfg = _cfg(tmp_path, ckpt)
    store = JobStore(cfg.db_path)
    job_id = store.create("c", "video", "v.mp4", 1, {}, contribute=True)
    (cfg.jobs_dir / job_id / "input").mkdir(parents=True)
    (cfg.jobs_dir / job_id / "input" / "video.mp4").write_bytes(videos[which].read_bytes())
    store.claim()
    runjob.run_job(cfg, job_id)
    job = store.get(job_id)
    assert job["state"] == "failed" and message in job["error"] and "\n" not in job["error"]
    assert not cfg.pool_dir.exists()  # bad captures never join the pool


def test_progress_fraction_is_monotone_over_the_phases():
    class Sink:
        def set_progress(self, *a):
            pass

    p = runjob.Progress(Sink(), "j")
    seen = []
    for phase, total in [("decode", 1), ("model", 1), ("graph", 1), ("inference", 4), ("poses", 4), ("align", 5), ("package", 1)]:
        for d in range(total + 1):
            p(phase, d, total)
            seen.append(p.fraction())
    assert all(b >= a - 1e-9 for a, b in zip(seen, seen[1:])) and seen[-1] == pytest.approx(1.0)


def test_server_runs_a_job_end_to_end_and_refuses_bad_input(tmp_path, ckpt, videos):
    cfg = _cfg(tmp_path, ckpt, jobs_per_client=2, max_upload_mb=1)
    with running_server(cfg) as (url, app):
        c = Client(url)
        status, job = c.upload([("../../etc/passwd", videos["good"].read_bytes())], contribute=True)
        assert status == 201, job
        assert job["display_name"] == "../../etc/passwd" and job["kind"] == "video" and job["contribute"]
        stored = list((cfg.jobs_dir / job["id"] / "input").iterdir())
        assert [p.name for p in stored] == ["video.mp4"]  # our name, not the client's
        # bad inputs: one line each, and the server keeps serving
        status, body = c.upload([("room.mp4", b"not a video at all")])
        assert status == 400 and body["error"].startswith("not a video or photo")
        status, body = c.upload([("a.jpg", _jpeg())])
        assert status == 400 and "single photo" in body["error"]
        status, body = c.upload([("big.mp4", b"\x00\x00\x00\x18ftypisom" + b"\x00" * (3 << 19))])  # 1.5 MB: cut off while copying
        assert status == 413 and "larger than the limit of 1 MB" in body["error"]
        conn = http.client.HTTPConnection(url.split("//")[1])  # announced as 1 GB: refused before the body is read
        conn.putrequest("POST", "/api/jobs")
        conn.putheader("Content-Length", str(10**9))
        conn.endheaders()
        r = conn.getresponse()
        assert r.status == 413 and "larger than the limit" in json.loads(r.read())["error"]
        conn.close()
        status, second = c.upload([("again.mp4", videos["good"].read_bytes())])
        assert status == 201
        status, body = c.upload([("third.mp4", videos["good"].read_bytes())])
        assert status == 429 and "2 jobs queued or running" in body["error"]
        done = c.wait(job["id"], timeout=120)
        assert done["state"] == "done", done["error"]
        assert done["result"]["frames"] == 6 and done["result"]["points"] > 0 and done["pooled"]
        assert set(done["progress"]) >= {"decode", "model", "inference", "poses", "align", "export", "package"}
        status, glb = c.request("GET", done["files"]["scene.glb"])
        assert status == 200 and glb[:4] == b"glTF"
        status, z = c.request("GET", done["files"]["colmap.zip"])
        names = zipfile.ZipFile(io.BytesIO(z)).namelist()
        assert {"colmap/cameras.txt", "colmap/images.txt", "colmap/points3D.txt", "images/00000.png"} <= set(names)
        status, z = c.request("GET", done["files"]["nerfstudio.zip"])
        assert "transforms.json" in zipfile.ZipFile(io.BytesIO(z)).namelist()
        assert c.request("GET", f"/api/jobs/{job['id']}/files/..%2Fserve.db")[0] == 404
        assert c.json("/api/jobs/" + "0" * 32)[0] == 404
        pool = cfg.pool_dir / job["id"]
        assert (pool / "video.mp4").is_file() and json.loads((pool / "meta.json").read_text())["job"] == job["id"]
        index = [json.loads(line) for line in (cfg.pool_dir / "index.jsonl").read_text().splitlines()]
        assert [e["job"] for e in index] == [job["id"]] and len(load_capture(index[0]["spec"])) == 8
        status, mine = c.json("/api/jobs")
        assert {j["id"] for j in mine["jobs"]} == {job["id"], second["id"]}
        assert c.wait(second["id"], timeout=120)["state"] == "done" and not c.json(f"/api/jobs/{second['id']}")[1]["pooled"]
        # several photos are a capture too; photos of different sizes are refused
        photos = [(f"IMG_{i}.JPG", _jpeg(f)) for i, f in enumerate(moving_frames(6))]
        status, body = c.upload(photos[:2] + [("odd.png", _jpeg(moving_frames(1, h=32)[0], "PNG"))])
        assert status == 400 and "different sizes" in body["error"]
        status, pj = c.upload(photos)
        assert status == 201 and pj["kind"] == "images" and pj["display_name"] == "6 photos"
        assert sorted(p.name for p in (cfg.jobs_dir / pj["id"] / "input" / "images").iterdir())[0] == "00000.jpg"
        pj = c.wait(pj["id"], timeout=120)
        assert pj["state"] == "done" and pj["result"]["frames"] == 6, pj["error"]
        status, page = c.request("GET", "/")
        assert status == 200 and b"Contribute this capture" in page
        assert c.request("GET", "/static/viewer.js")[0] == 200


@pytest.mark.slow  # two job processes start (torch import each): ~25 s on a busy machine
def test_auth_restart_resume_and_a_crashing_job_process(tmp_path, ckpt, videos):
    cfg = ServeConfig(data=tmp_path / "data", ckpt=ckpt, auth="ann:s3cret", recon=FAST)
    with running_server(cfg, start_worker=False) as (url, app):  # the server stops before any worker ran the job
        assert Client(url).json("/api/jobs")[0] == 401
        assert Client(url, auth="ann:wrong").json("/api/jobs")[0] == 401
        status, job = Client(url, auth="ann:s3cret").upload(videos["good"])
        assert status == 201
        app.state.store.claim()  # as if a worker had started it when the server went down
    assert JobStore(cfg.db_path).get(job["id"])["state"] == "running"
    with running_server(cfg) as (url, app):  # restart: the job is re-queued and completes
        c = Client(url, auth="ann:s3cret")
        done = c.wait(job["id"], timeout=120)
        assert done["state"] == "done" and done["attempts"] == 2
        status, victim = c.upload(videos["good"])
        store = app.state.store
        while store.get(victim["id"])["state"] != "running":
            time.sleep(0.05)
        os.kill(int(store.get(victim["id"])["worker"]), signal.SIGKILL)  # the job process dies mid-job
        failed = c.wait(victim["id"], timeout=60)
        assert failed["state"] == "failed" and "crashed" in failed["error"] and "signal 9" in failed["error"]
        status, after = c.upload(videos["good"])  # a fresh job process takes the next job
        assert c.wait(after["id"], timeout=120)["state"] == "done"


def _jpeg(img: np.ndarray | None = None, fmt: str = "JPEG") -> bytes:
    b = io.BytesIO()
    Image.fromarray(moving_frames(1)[0] if img is None else img).save(b, format=fmt)
    return b.getvalue()


@pytest.mark.slow  # a job process starts (torch import)
def test_a_job_over_the_time_limit_is_stopped_and_fails(tmp_path, ckpt, videos):
    cfg = ServeConfig(data=tmp_path / "data", ckpt=ckpt, recon=FAST, job_timeout_s=0.2)
    with running_server(cfg) as (url, app):
        c = Client(url)
        job = c.wait(c.upload(videos["good"])[1]["id"], timeout=120)
        assert job["state"] == "failed" and "longer than the limit" in job["error"]


def test_serve_command_is_registered_with_its_options():
    from typer.testing import CliRunner

    from vibe3r.cli import app

    res = CliRunner().invoke(app, ["serve", "--help"])
    assert res.exit_code == 0
    for opt in ("--host", "--port", "--data", "--ckpt", "--auth", "--max-upload-mb", "--jobs-per-client", "--job-timeout-min"):
        assert opt in res.output
    assert CliRunner().invoke(app, ["serve", "--auth", "nopassword"]).exit_code != 0
