"""``vibe3r serve`` in a real browser: Debian's chromium (the system executable, never a downloaded browser) driven
by Playwright uploads an mp4 made from 7-Scenes frames, waits for the job, sees the 3D viewer draw the scene,
downloads the GLB; a corrupt upload and a static-camera video each show their one-line error.

The default run uses a tiny random network (the page and the plumbing are under test, ~20 s); the slow run
uses the shipped checkpoint. Screenshots go to ``bench/out/serve-browser/`` (gitignored) and the test's tmp dir.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from _common import REAL, TINY_MODEL, needs_real
from _serve import running_server

from vibe3r.captures import load_capture, write_capture_video
from vibe3r.config import ReconModelConfig
from vibe3r.recon.model import build_model
from vibe3r.serve.config import ReconSettings, ServeConfig

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(__file__).resolve().parents[1] / "bench" / "out" / "serve-browser"
pytestmark = [needs_real, pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")]
# headless chromium as root needs --no-sandbox; WebGL through SwiftShader (no GPU on the test machine)
ARGS = ["--no-sandbox", "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


@pytest.fixture(scope="module")
def kitchen_mp4(tmp_path_factory) -> Path:
    """12 frames of 7-Scenes redkitchen as an H.264 mp4, made at test time (never committed)."""
    cap = load_capture(REAL / "7scenes-redkitchen", max_frames=12, size=160)
    return write_capture_video(cap, tmp_path_factory.mktemp("upload") / "kitchen.mp4", fps=5)


def _browser_session(url: str, mp4: Path, tmp_path: Path, tag: str, job_timeout_ms: int) -> dict:
    shots = tmp_path / "screenshots"
    shots.mkdir(exist_ok=True)
    SHOTS.mkdir(parents=True, exist_ok=True)

    def shot(page, name):
        page.screenshot(path=str(shots / f"{tag}-{name}.png"), full_page=True)
        shutil.copy(shots / f"{tag}-{name}.png", SHOTS / f"{tag}-{name}.png")

    corrupt = tmp_path / "holiday.mp4"
    corrupt.write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 3])  # cut short: no index, frames missing
    static = write_capture_video(np.stack([load_capture(mp4, max_frames=1).images[0]] * 6), tmp_path / "still.mp4", fps=5)
    out: dict = {}
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 1000}, accept_downloads=True)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))

        # 1. the video: upload, follow the job, see the viewer, download the GLB
        page.goto(url + "/")
        page.set_input_files("#file", str(mp4))
        page.check("#contribute")
        shot(page, "1-upload")
        page.click("#submit")
        page.wait_for_url("**/jobs/*", timeout=30_000)
        page.wait_for_selector("#result:not([hidden])", timeout=job_timeout_ms)
        page.wait_for_selector("#viewer[data-ready='1']", timeout=30_000)
        out["viewer"] = page.eval_on_selector("#viewer", "c => ({...c.dataset})")
        shot(page, "2-result")
        with page.expect_download() as dl:
            page.click("a[data-file='scene.glb']")
        out["glb_name"] = dl.value.suggested_filename
        glb = tmp_path / "downloaded.glb"
        dl.value.save_as(glb)
        out["glb_head"] = glb.read_bytes()[:4]
        out["summary"] = page.text_content("#summary")

        # 2. a corrupt file: a readable error on the upload page, no job
        page.goto(url + "/")
        page.set_input_files("#file", str(corrupt))
        page.click("#submit")
        page.wait_for_selector("#error:not(:empty)", timeout=30_000)
        out["corrupt_error"] = page.text_content("#error")
        shot(page, "3-corrupt")

        # 3. a camera that never moves: accepted, then the job fails with its reason on the job page
        page.set_input_files("#file", str(static))
        page.click("#submit")
        page.wait_for_url("**/jobs/*", timeout=30_000)
        page.wait_for_selector("#error:not(:empty)", timeout=job_timeout_ms)
        out["static_error"] = page.text_content("#error")
        shot(page, "4-static")

        page.goto(url + "/")
        page.wait_for_selector("#jobs tr", timeout=10_000)
        out["job_rows"] = page.locator("#jobs tr").count()
        shot(page, "5-jobs")
        out["page_errors"] = errors
        browser.close()
    return out


def _check(out: dict) -> None:
    v = out["viewer"]
    assert int(v["points"]) > 0 and int(v["triangles"]) > 0  # the points and the camera frusta were parsed ...
    assert int(v["litPixels"]) > 200  # ... and drawn
    assert out["glb_head"] == b"glTF" and out["glb_name"].endswith("scene.glb")
    assert "corrupt" in out["corrupt_error"] and "\n" not in out["corrupt_error"].strip()
    assert "camera does not move" in out["static_error"]
    assert out["job_rows"] == 2 and out["page_errors"] == []
    assert "added to the loop's capture pool" in out["summary"]


def test_browser_upload_view_download_and_errors(tmp_path, kitchen_mp4):
    ckpt = tmp_path / "tiny"
    build_model(ReconModelConfig(**TINY_MODEL)).save_pretrained(ckpt)
    cfg = ServeConfig(data=tmp_path / "data", ckpt=ckpt, recon=ReconSettings(size=64, max_frames=6, iters=5, pose="procrustes"))
    with running_server(cfg) as (url, app):
        out = _browser_session(url, kitchen_mp4, tmp_path, "tiny", job_timeout_ms=120_000)
    _check(out)
    assert len((cfg.pool_dir / "index.jsonl").read_text().splitlines()) == 1  # the opted-in kitchen only


@pytest.mark.slow
def test_browser_with_the_shipped_checkpoint(tmp_path, kitchen_mp4):
    cfg = ServeConfig(data=tmp_path / "data", recon=ReconSettings(size=128, max_frames=8, iters=100))
    with running_server(cfg) as (url, app):
        out = _browser_session(url, kitchen_mp4, tmp_path, "base", job_timeout_ms=300_000)
    _check(out)


def test_browser_evaluator_judges_one_comparison(tmp_path):
    """`vibe3r serve --run`: the server's builder process reconstructs the run's capture with each round's model,
    the evaluator page shows both sides (views + two 3D viewers), a click on "A is better" is a human judgement."""
    import time

    from _evalrun import tiny_run

    from vibe3r.preference.store import PreferenceStore
    from vibe3r.serve.evaluator import EvalSettings

    run = tiny_run(tmp_path)
    cfg = ServeConfig(data=tmp_path / "data", evaluate=EvalSettings(run=run, frames=4, size=64, iters=10))
    shots = tmp_path / "screenshots"
    shots.mkdir()
    SHOTS.mkdir(parents=True, exist_ok=True)
    out: dict = {}
    with running_server(cfg) as (url, app), playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1100})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        t0 = time.perf_counter()
        page.goto(url + "/evaluate")
        page.wait_for_selector("#status:not(:empty)", timeout=10_000)
        out["load_s"] = time.perf_counter() - t0
        page.fill("#annotator", "tester")
        page.dispatch_event("#annotator", "change")
        t0 = time.perf_counter()
        page.wait_for_selector("#item[data-ready='1']", timeout=120_000)  # built by the server's builder process
        out["first_item_s"] = time.perf_counter() - t0
        out["viewers"] = [page.eval_on_selector(f"#viewer-{s}", "c => ({...c.dataset})") for s in "ab"]
        out["views_loaded"] = page.eval_on_selector_all(".views img, img.strip", "ims => ims.map(i => i.complete && i.naturalWidth > 0)")
        item_id = int(page.get_attribute("#item", "data-id"))
        page.screenshot(path=str(shots / "evaluate-1-item.png"), full_page=True)
        t0 = time.perf_counter()
        page.click("#vote-a")
        page.wait_for_selector("body[data-last-judgement]", timeout=10_000)
        page.wait_for_function(f"document.querySelector('#item').dataset.id !== '{item_id}' || document.querySelector('#item').hidden",
                               timeout=30_000)
        out["vote_to_next_s"] = time.perf_counter() - t0
        out["status"] = page.text_content("#status")
        page.screenshot(path=str(shots / "evaluate-2-next.png"), full_page=True)
        out["errors"] = errors + ([page.text_content("#error")] if page.text_content("#error") else [])
        browser.close()
    for f in shots.glob("evaluate-*.png"):
        shutil.copy(f, SHOTS / f.name)
    print("evaluator page:", {k: round(v, 2) for k, v in out.items() if k.endswith("_s")})
    assert out["errors"] == []
    assert all(int(v["points"]) > 0 and int(v["litPixels"]) > 200 for v in out["viewers"])
    assert len(out["views_loaded"]) == 5 and all(out["views_loaded"])
    with PreferenceStore(run / "preferences.sqlite") as st:
        js = st.judgements()
    assert [(j.comparison_id, j.verdict, j.annotator, j.source) for j in js] == [(item_id, "a", "tester", "human")]
    assert js[0].created_at > time.time() - 300
