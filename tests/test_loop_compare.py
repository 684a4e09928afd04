"""`vibe3r loop compare`: the HTML report of a fake run (real Registry and PreferenceStore, no training,
no rendering) has the table rows and embedded figures, the JSON numbers are the registry's, missing
pieces are shown as absent, and a bad run is a one-line error."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vibe3r.loop.cli import app
from vibe3r.loop.registry import Registry
from vibe3r.preference.store import PreferenceStore
from vibe3r.recon.policy import PairSample

GRID = (12, 16)  # descriptor cells of a 96x128 frame at stride 8


def _samples(n: int, seed0: int) -> list[PairSample]:
    """Draw fields on a 12x16 grid: view-1 cell c matched to cell c + 1 (cycle-consistent), a growing share
    redrawn at random; a small sideways motion as the relative pose."""
    rng = np.random.default_rng(seed0)
    cells = GRID[0] * GRID[1]
    out = []
    for k in range(n):
        fwd = (np.arange(cells) + 1) % cells
        bad = rng.random(cells) < 0.2 * k
        fwd[bad] = rng.integers(0, cells, bad.sum())
        bwd = np.zeros(cells, np.int32)
        bwd[fwd] = np.arange(cells)
        T21 = np.eye(4)
        T21[:3, 3] = [-0.1, 0.01 * k, 0.0]
        out.append(PairSample(seed=seed0 + k, fwd=fwd.astype(np.int32), bwd=bwd, logp=-float(k), kp1=np.zeros((5, 2)),
                              kp2=np.zeros((5, 2)), inliers=np.ones(5, bool), T21=T21, is_mode=k == 0))
    return out


def _rewards(values: list[float], degenerate: tuple[int, ...] = ()) -> list[dict]:
    return [{"combined": v, "photometric": 2 * v, "epipolar": v - 1, "degenerate": "no pose" if k in degenerate else None}
            for k, v in enumerate(values)]


def _stage(reg: Registry, rnd: int, name: str, idx: int, metrics: dict, artifacts: list | None = None, checkpoint: dict | None = None) -> None:
    reg.start_stage(rnd, name, idx, "h", {})
    reg.finish_stage(rnd, name, {a["name"]: a["path"] for a in artifacts or []}, metrics, artifacts or [], 1.0, 10.0, checkpoint)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _evaluated_round(reg: Registry, run: Path, rnd: int, auc: float, real: float, promoted: bool) -> None:
    _stage(reg, rnd, "generate", 0, {"videos": 2.0, "pairs": 16.0})
    _stage(reg, rnd, "train_recon", 1, {"final_loss": 0.9 - 0.1 * rnd, "final_match_acc": 0.5 + 0.1 * rnd, "steps": 12.0})
    cand = {"heldout_auc10": auc, "real_auc10": real, "heldout_loss": 0.8, "heldout_depth_absrel": 0.3}
    parent = {"heldout_auc10": 20.0, "real_auc10": 21.0, "heldout_loss": 0.85}
    _write(run / f"rounds/{rnd:04d}/evaluate/eval.json", json.dumps({"candidate": cand, "parent": parent}))
    _stage(reg, rnd, "evaluate", 3, {**cand, **{f"parent_{k}": v for k, v in parent.items()}},
           [{"name": "eval", "kind": "file", "path": f"rounds/{rnd:04d}/evaluate/eval.json"}])
    _stage(reg, rnd, "promote", 4, {"promoted": float(promoted)},
           checkpoint={"path": f"rounds/{rnd:04d}/train_recon/ckpt", "sha256": "x", "promoted": promoted, "metric": auc,
                       "parent_metric": 20.0, "reason": "within tolerance" if promoted else "regressed beyond tolerance 1"})


def fake_run(run: Path, spec: str = "real/tum@0:10") -> Path:
    """Round 1: SFT, evaluated, not promoted. Round 2: SFT -> sample_real (store of capture ``spec``) -> DPO, evaluated,
    promoted, a GLB. Round 3: started, generate only. Human labels round 2 vs round 1 in RUN/preferences.sqlite:
    2 wins, 1 loss."""
    with Registry(run) as reg:
        for rnd in (1, 2, 3):
            reg.start_round(rnd, "h", {}, ["generate", "train_recon", "sample_real", "prefer_recon", "evaluate", "promote"])
        _evaluated_round(reg, run, 1, 22.0, 23.0, promoted=False)
        store = run / "rounds/0002/sample_real/preferences.sqlite"
        with PreferenceStore(store) as st:
            cap = st.add_capture(spec, "tum", 10)
            for k, (i, j) in enumerate([(0, 3), (2, 6)]):
                st.add_samples(st.add_pair(cap, i, j), _samples(4, 10 * k), _rewards([1.0 + k, 0.5, 0.25, -1.0], degenerate=(3,)), "v2", round=2)
            assert st.prefer_by_reward(2, "v2") == 2
        _stage(reg, 2, "sample_real", 2, {"samples": 8.0, "degenerate_frac": 0.25},
               [{"name": "store", "kind": "file", "path": "rounds/0002/sample_real/preferences.sqlite"}])
        _write(run / "rounds/0002/prefer_recon/ckpt/preference.json", json.dumps({"method": "dpo", "parent": "p", "last": {}}))
        _stage(reg, 2, "prefer_recon", 3, {"dpo_loss": 0.6, "dpo_accuracy": 0.75, "dpo_preferences": 2.0},
               [{"name": "recon", "kind": "dir", "path": "rounds/0002/prefer_recon/ckpt"}])
        _evaluated_round(reg, run, 2, 25.0, 26.5, promoted=True)
        reg.finish_round(1)
        reg.finish_round(2)
        _stage(reg, 3, "generate", 0, {"videos": 2.0, "pairs": 16.0})
    _write(run / "rounds/0002/export/room.glb", "glTF")
    with PreferenceStore(run / "preferences.sqlite") as st:  # human duels between the two rounds' samples
        pair = st.add_pair(st.add_capture("real/tum@0:10"), 0, 3)
        old = st.add_samples(pair, _samples(3, 100), _rewards([0.0, 0.0, 0.0]), "v1", round=1)
        new = st.add_samples(pair, _samples(3, 200), _rewards([0.0, 0.0, 0.0]), "v2", round=2)
        st.add_preference(new[0], old[0], 2, "human", "ann")
        st.add_preference(new[1], old[1], 2, "human", "ann")
        st.add_preference(old[2], new[2], 2, "human", "ann")
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_run(tmp_path_factory.mktemp("cmp") / "run")


def test_html_report_has_rows_figures_and_links(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "report.html"
    res = CliRunner().invoke(app, ["compare", "--run", str(run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    page = out.read_text()
    for rnd in (1, 2, 3):
        assert f"<tr><td class=l>{rnd}</td><td>" in page
    # round 2: held-out and real AUC@10 beside the live parent's, promoted
    assert '<tr><td class=l>2</td><td>done</td><td>25 <span class="absent">(live 20)</span></td><td>26.5 <span class="absent">(live 21)</span>' in page
    assert "<td>evaluate/real_auc10" not in page and "<td class=l>evaluate/real_auc10</td><td>23</td><td>26.5</td>" in page  # full table
    figs = re.findall(r'<img id="fig-(\w+)" alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert {k for k, _ in figs} == {"auc", "losses", "rewards", "margins"}
    assert all(len(b) > 2000 for _, b in figs)
    assert not re.search(r'(src|href)="(https?:|//)', page) and "<link" not in page and "<script" not in page
    assert "room.glb</a>" in page
    assert "67% vs round 1 (n=3: 2 won, 1 lost)" in page
    assert "SFT → DPO" in page and "SFT only" in page
    assert page.count('<span class="absent">none</span>') == 2  # rounds 1 and 3 have no GLB


def test_glb_link_is_relative_to_the_report(run: Path, tmp_path: Path) -> None:
    import os

    out = tmp_path / "r.html"
    assert CliRunner().invoke(app, ["compare", "--run", str(run), "--out", str(out)]).exit_code == 0
    href = re.search(r'<a href="([^"]+)">room.glb</a>', out.read_text()).group(1)
    assert (out.parent / href).resolve() == (run / "rounds/0002/export/room.glb").resolve()
    assert not os.path.isabs(href)


def test_json_numbers_equal_the_registry(run: Path) -> None:
    res = CliRunner().invoke(app, ["compare", "--run", str(run), "--rounds", "1", "2", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    with Registry(run) as reg:
        metrics = reg.metrics()
        promoted = {c["round"]: bool(c["promoted"]) for c in reg.checkpoints()}
    assert [r["round"] for r in data["rounds"]] == [1, 2]
    for r in data["rounds"]:
        assert r["metrics"] == metrics[r["round"]]
        assert r["promoted"] == promoted[r["round"]]
    r1, r2 = data["rounds"]
    assert r1["preference"] is None and r1["prefer"] is None and r1["human_vs_previous"] is None and r1["glb"] == []
    p = r2["preference"]
    assert p["samples"] == 8 and p["degenerate_frac"] == 0.25
    assert p["combined"]["n"] == 6 and p["combined"]["mean"] == pytest.approx(np.mean([1.0, 0.5, 0.25, 2.0, 0.5, 0.25]))
    assert p["terms"]["photometric"]["mean"] == pytest.approx(2 * p["combined"]["mean"])
    assert p["margins"]["reward"]["n"] == 2 and p["margins"]["reward"]["mean"] == pytest.approx(np.mean([2.0, 3.0]))
    assert r2["prefer"] == {"method": "dpo", "metrics": {"dpo_loss": 0.6, "dpo_accuracy": 0.75, "dpo_preferences": 2.0}}
    assert r2["human_vs_previous"] == {"previous": 1, "wins": 2, "losses": 1, "ties": 0, "n": 3, "win_rate": pytest.approx(2 / 3)}
    assert r2["glb"] == ["rounds/0002/export/room.glb"]
    assert data["human_labels"] == 3 and data["live_round"] == 2


def test_missing_pieces_are_absent_not_a_crash(tmp_path: Path) -> None:
    run = tmp_path / "bare"
    with Registry(run) as reg:
        reg.start_round(1, "h", {}, ["generate", "train_recon", "evaluate", "promote"])
        _stage(reg, 1, "generate", 0, {"videos": 1.0})
    _write(run / "rounds/0001/prefer_video/model/generator.json", "{not json")  # a broken file is absent too
    out = tmp_path / "bare.html"
    res = CliRunner().invoke(app, ["compare", "--run", str(run), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    page = out.read_text()
    assert "no human labels yet" in page and "no evaluation in these rounds" in page and "no preference store" in page
    assert "data:image/png" not in page
    assert "round 1: no examples (no preference store in this round)" in page and "JSONDecodeError" in page
    assert "no reconstruction checkpoint in this round" in page and "no trajectory in these rounds" in page
    r = json.loads(res.stdout)["rounds"][0]
    assert r["state"] == "running" and r["evaluated"] is False and r["promoted"] is None and r["preference"] is None


REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"
SEVEN = REAL / "7scenes-redkitchen"
needs_real = pytest.mark.skipif(not SEVEN.is_dir(), reason="the shared real data (../shared/data/real) is not here")


def add_media(run: Path) -> Path:
    """Round 2 of a fake run gets what the pictures need: the shipped reconstruction checkpoint as its
    ``prefer_recon`` output, the shipped generator as its ``prefer_video`` output (with a ``generator.json``),
    and the run a held-out video (22 frames of 64x48 gradients, orbiting cameras) to take a prompt from."""
    from vibe3r.video_gen.video_io import write_video

    ckpt = run / "rounds/0002/prefer_recon/ckpt"
    for f in ("config.json", "model.safetensors"):
        shutil.copy(REPO / "weights/recon-base" / f, ckpt / f)
    model = run / "rounds/0002/prefer_video/model"
    model.mkdir(parents=True)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(REPO / "weights/gen-base" / f, model / f)
    ev = lambda r: {"n": 2, "recon": {"rot_err": r}, "flow": {"rot_err": r / 2}, "psnr_to_render": 15.0}  # noqa: E731
    (model / "generator.json").write_text(json.dumps({"kept_candidate": True, "candidate": ev(4.5), "parent_eval": ev(5.5)}))
    n, H, W = 22, 48, 64
    yy, xx = np.mgrid[0:H, 0:W]
    frames = np.stack([np.stack([(xx * 4 + 6 * k) % 256, yy * 5 % 256, np.full_like(xx, 40 + 5 * k)], -1) for k in range(n)]).astype(np.uint8)
    c2w = np.stack([np.eye(4)] * n)
    c2w[:, 0, 3] = np.linspace(0, 0.5, n)
    K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
    write_video(run / "heldout-test/pairs/videos/00000", frames, K, c2w, np.ones((n, H, W), np.float32), {"prompt": "dolly right 0.5"})
    return run


# a cheap trajectory: 5 frames of 7-Scenes' evaluation half at 64 px, 20 alignment iterations
FAST = dict(trajectory=str(SEVEN) + "@125:185:12", size=64, iters=20)


@pytest.fixture(scope="module")
def media_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("media") / "run"
    return add_media(fake_run(run, spec=str(SEVEN) + "@0:125:20"))


@needs_real
def test_report_shows_media_when_the_round_has_the_data(media_run: Path, tmp_path: Path) -> None:
    from vibe3r.loop.compare import compare
    from vibe3r.loop.report_media import MediaSettings

    out = tmp_path / "rep" / "report.html"
    res = compare(media_run, out, media=True, media_settings=MediaSettings(**FAST))
    page = out.read_text()
    imgs = dict(re.findall(r'<img id="(media-[\w-]+)" alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page))
    assert set(imgs) == {"media-pref-2-0", "media-pref-2-1", "media-gen-2", "media-trajectories"}
    assert all(len(b) > 2000 for b in imgs.values())
    # chosen vs rejected: the captions carry the reward terms; the rounds without a store say so
    assert "<td class=l>chosen</td><td>2</td><td>epipolar 1; photometric 4</td>" in page
    assert "round 1: no examples (no preference store in this round)" in page
    # generator: the camera errors of generator.json, the strip of a held-out prompt; absent in the other rounds
    assert "<tr><td class=l>2</td><td>candidate</td><td>4.5</td><td>5.5</td><td>2.25</td><td>2.75</td><td>15</td>" in page
    assert "held-out prompt 00000@" in page and page.count("no prefer_video stage in this round") == 2
    # trajectory: round 2 only (the only round with a checkpoint), ATE from GT, its GLB linked relative to the report
    t = res["media"]["rounds"][2]["trajectory"]
    assert t["frames"] == 5 and 0 < t["ate"] < 1.0
    href = re.search(r'<a href="([^"]+)">scene.glb</a>', page).group(1)
    assert not href.startswith("/") and (out.parent / href).resolve() == Path(t["glb"]).resolve()
    assert (media_run / "report-cache") in Path(t["glb"]).parents
    assert "no reconstruction checkpoint in this round" in page
    assert not re.search(r'(src|href)="(https?:|//)', page) and "<script" not in page
    ex = res["media"]["rounds"][2]["examples"]
    assert len(ex) == 2 and ex[0]["margin"] >= ex[1]["margin"] and ex[0]["chosen"]["matches"] > ex[0]["rejected"]["matches"]


@needs_real
def test_second_report_reads_the_cache(media_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vibe3r.loop.compare import compare
    from vibe3r.loop.report_media import MediaSettings

    settings = MediaSettings(**FAST)
    first = compare(media_run, tmp_path / "a.html", media=True, media_settings=settings)["media"]
    assert first["cache"]["hits"] + first["cache"]["builds"] == 3  # examples, generator strip, trajectory of round 2

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("rebuilt instead of read from the cache")

    import vibe3r.captures
    import vibe3r.recon.run
    import vibe3r.video_gen.diffusion

    monkeypatch.setattr(vibe3r.recon.run, "reconstruct", boom)
    monkeypatch.setattr(vibe3r.captures, "load_capture", boom)
    monkeypatch.setattr(vibe3r.video_gen.diffusion.VideoGenerator, "from_pretrained", boom)
    second = compare(media_run, tmp_path / "b.html", media=True, media_settings=settings)["media"]
    assert second["cache"] == {**first["cache"], "hits": 3, "builds": 0}
    assert second["rounds"][2]["trajectory"]["ate"] == first["rounds"][2]["trajectory"]["ate"]
    page = (tmp_path / "b.html").read_text()
    assert 'id="media-trajectories"' in page and 'id="media-gen-2"' in page and 'id="media-pref-2-0"' in page
    # other settings are another cache entry: the trajectory would be rebuilt
    with pytest.raises(AssertionError, match="rebuilt"):
        from vibe3r.loop.report_media import MediaCache, trajectory

        trajectory(media_run / "rounds/0002/prefer_recon/ckpt", MediaSettings(**{**FAST, "iters": 21}), MediaCache(media_run))


def test_media_can_be_turned_off(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIBE3R_REPORT_MEDIA", "0")
    out = tmp_path / "off.html"
    res = CliRunner().invoke(app, ["compare", "--run", str(run), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    page = out.read_text()
    assert page.count("pictures turned off") == 3 and 'id="media-' not in page
    assert "media" not in json.loads(res.stdout)


def _main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    from vibe3r.cli import main

    monkeypatch.setattr(sys, "argv", ["vibe3r", "loop", "compare", *args])
    monkeypatch.delenv("VIBE3R_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code, capsys.readouterr().err


def test_unknown_run_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    code, err = _main(monkeypatch, capsys, "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "r.html"))
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "nope" in err
    (tmp_path / "empty").mkdir()
    code, err = _main(monkeypatch, capsys, "--run", str(tmp_path / "empty"), "--json")
    assert code == 2 and err.count("\n") == 1 and "not a loop run" in err
    assert not (tmp_path / "empty" / "registry.sqlite").exists()  # reading never creates a registry


def test_unknown_round_is_a_one_line_error(run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    code, err = _main(monkeypatch, capsys, "--run", str(run), "--rounds", "1", "7", "--json")
    assert code == 2 and err.count("\n") == 1 and "round 7 is not in" in err and "rounds: 1, 2, 3" in err


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(__file__).resolve().parents[1] / "bench" / "out" / "loop-compare"


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(run: Path, media_run: Path, tmp_path: Path) -> None:
    """Debian's chromium (through Playwright, never a downloaded browser) opens the report offline: every
    embedded figure decodes, the table is laid out, a full-page screenshot is taken (bench/out/loop-compare/).
    With the shared real data the report is of the run with pictures (chosen vs rejected, generator, trajectories)."""
    from vibe3r.loop.compare import compare
    from vibe3r.loop.report_media import MediaSettings

    sync_api = pytest.importorskip("playwright.sync_api")
    out = tmp_path / "report.html"
    with_media = SEVEN.is_dir()
    compare(media_run if with_media else run, out, media=with_media, media_settings=MediaSettings(**FAST))
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1250, "height": 900}, offline=True)
            page.goto(out.as_uri())
            sizes = page.eval_on_selector_all("img", "els => els.map(e => [e.id, e.complete, e.naturalWidth, e.naturalHeight])")
            rows = page.eval_on_selector_all("table:first-of-type tr", "els => els.length")
            page.screenshot(path=str(SHOTS / "report.png"), full_page=True)
        finally:
            browser.close()
    media = {"media-pref-2-0", "media-pref-2-1", "media-gen-2", "media-trajectories"} if with_media else set()
    assert {s[0] for s in sizes} == {"fig-auc", "fig-losses", "fig-rewards", "fig-margins"} | media
    assert all(ok and w > 200 and h > 100 for _, ok, w, h in sizes), sizes
    assert rows == 4  # header + rounds 1, 2, 3
    assert (SHOTS / "report.png").stat().st_size > 20_000
