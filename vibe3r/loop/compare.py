"""Round comparison for evaluators: ``vibe3r loop compare``.

    vibe3r loop compare --run runs/demo --out report.html                # every round
    vibe3r loop compare --run runs/demo --rounds 1 3 5 --out report.html # a subset
    vibe3r loop compare --run runs/demo --json                          # the numbers, for scripts

:func:`collect` reads a run **read-only** (the registry through a ``mode=ro`` SQLite connection, the
rounds' preference stores likewise, ``preference.json`` of the ``prefer_recon`` checkpoint) and returns
the numbers; :func:`render_html` turns them into one self-contained HTML file (matplotlib figures
embedded as base64 PNG, no external assets). A run may be active while it is read.

Per round the report holds:

* the registry's metrics (every ``stage/name``) and the promotion decision;
* from the round's preference store (``rounds/NNNN/*/preferences.sqlite``, e.g. ``sample_real``):
  the combined reward and each reward term of the non-degenerate samples, the degenerate fraction,
  and the preference margins per source (``reward`` | ``human``);
* the supervised fine-tune (``train_recon``) against the preference stage (``prefer_recon``: its
  metrics and the method named in its checkpoint's ``preference.json``), and any extra variants an
  ``eval.json`` carries beside ``candidate`` and ``parent``;
* the human win rate against the previous round (round 0: the base checkpoint): over every human verdict
  in the run's stores (the round stores and ``RUN/preferences.sqlite``, which the web app's evaluator
  page writes) between round r and the round before it — ``human`` preferences between samples and
  evaluators' judgements of whole reconstructions — ``(wins + ties / 2) / n``, with n shown;
* the reconstruction GLB files found in the round folder, linked relative to the report;
* pictures (``vibe3r.loop.report_media``, cached in ``RUN/report-cache/``): chosen-vs-rejected examples from
  the round's preference store, the generator's held-out camera errors and a generated frame strip,
  and the camera trajectory (predicted vs GT, Sim(3)) of a short real sequence reconstructed with the
  round's final checkpoint, with its GLB. ``media=False`` (or ``VIBE3R_REPORT_MEDIA=0``) leaves them out;
  the first report of a run reconstructs the sequence once per round (about 25-30 s each on this CPU),
  later ones read the cache.

Anything a round lacks (no evaluation, no preference stage, an unfinished round) is reported as absent.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from vibe3r.errors import Vibe3rError
from vibe3r.loop.registry import REGISTRY_NAME, Registry

STORE_NAME = "preferences.sqlite"


# --------------------------------------------------------------------------------------------
# Reading (never writing) a run
# --------------------------------------------------------------------------------------------


def _connect_ro(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    return db


def open_registry_ro(run_dir: Path) -> Registry:
    """A :class:`Registry` for its queries only: the constructor would create tables and write ``meta``."""
    path = Path(run_dir) / REGISTRY_NAME
    if not path.is_file():
        raise Vibe3rError(f"{run_dir} is not a loop run (no {REGISTRY_NAME})")
    reg = Registry.__new__(Registry)
    reg.run_dir, reg.path = Path(run_dir), path
    try:
        reg.db = _connect_ro(path)
        reg.db.execute("SELECT 1 FROM rounds LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise Vibe3rError(f"cannot read {path}: {exc}") from None
    return reg


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values, dtype=np.float64)
    return {"n": int(a.size), "mean": float(a.mean()), "median": float(np.median(a)), "std": float(a.std()),
            "min": float(a.min()), "max": float(a.max())}


def read_store(path: Path, rnd: int | None) -> dict[str, Any]:
    """Reward and margin values of one preference store (``rnd``: that round's samples and preferences only).

    Returns ``{"samples", "degenerate", "combined": [...], "mode_combined": [...], "terms": {term: [...]},
    "margins": {source: [...]}}`` (values of non-degenerate samples)."""
    with _connect_ro(path) as db:
        where, args = ("WHERE round=?", (rnd,)) if rnd is not None else ("", ())
        rows = db.execute(f"SELECT is_mode, rewards, combined, degenerate FROM samples {where} ORDER BY id", args).fetchall()
        prefs = db.execute(f"SELECT source, margin FROM preferences {where} ORDER BY id", args).fetchall()
    out: dict[str, Any] = {"samples": len(rows), "degenerate": 0, "combined": [], "mode_combined": [], "terms": {}, "margins": {}}
    for r in rows:
        if r["degenerate"] is not None:
            out["degenerate"] += 1
            continue
        out["combined"].append(r["combined"])
        if r["is_mode"]:
            out["mode_combined"].append(r["combined"])
        for k, v in json.loads(r["rewards"] or "{}").items():
            if isinstance(v, (int, float)) and v is not None and np.isfinite(v):
                out["terms"].setdefault(k, []).append(float(v))
    for p in prefs:
        if p["margin"] is not None:
            out["margins"].setdefault(p["source"], []).append(float(p["margin"]))
    return out


Duel = tuple[int, int, float]  # (round of A, round of B, A's points: 1 win, 0.5 tie, 0 loss)


def human_duels(path: Path) -> list[Duel]:
    """Every human verdict in a store as ``(round A, round B, A's points)``: the ``human`` preferences between
    samples (chosen first, a win) and the evaluators' judgements of whole reconstructions (ties count half).
    A store written before the judgement tables existed has only the former."""
    with _connect_ro(path) as db:
        out: list[Duel] = [(a, b, 1.0) for a, b in db.execute(
            "SELECT c.round, r.round FROM preferences p JOIN samples c ON c.id = p.chosen_id"
            " JOIN samples r ON r.id = p.rejected_id WHERE p.source = 'human' ORDER BY p.id")]
        if db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='judgements'").fetchone():
            out += [(a, b, {"a": 1.0, "b": 0.0, "tie": 0.5}[v]) for a, b, v in db.execute(
                "SELECT ra.round, rb.round, j.verdict FROM judgements j JOIN comparisons m ON m.id = j.comparison_id"
                " JOIN reconstructions ra ON ra.id = m.a_id JOIN reconstructions rb ON rb.id = m.b_id"
                " WHERE j.source = 'human' ORDER BY j.id")]
    return out


def win_rate(duels: list[Duel], rnd: int, prev: int) -> dict[str, Any]:
    """Round ``rnd`` against round ``prev`` over the duels between them (either side shown as A):
    ``win_rate = (wins + ties / 2) / n``; None without a duel."""
    wins = losses = ties = 0
    for a, b, pts in duels:
        if (a, b) == (rnd, prev):
            mine = pts
        elif (a, b) == (prev, rnd):
            mine = 1.0 - pts
        else:
            continue
        if mine == 0.5:
            ties += 1
        elif mine > 0.5:
            wins += 1
        else:
            losses += 1
    n = wins + losses + ties
    return {"previous": prev, "wins": wins, "losses": losses, "ties": ties, "n": n,
            "win_rate": (wins + 0.5 * ties) / n if n else None}


def _visible(p: Path, root: Path) -> bool:
    """Not inside an unfinished stage's ``.tmp`` folder (or any hidden one)."""
    return not any(part.startswith(".") for part in p.relative_to(root).parts)


def _round_stores(reg: Registry, rnd: int) -> list[Path]:
    run = reg.run_dir
    found = [run / a["path"] for a in reg.artifacts(rnd=rnd) if a["path"].endswith(".sqlite")]
    round_dir = run / "rounds" / f"{rnd:04d}"
    if round_dir.is_dir():
        found += [p for p in sorted(round_dir.glob(f"*/{STORE_NAME}")) if _visible(p, round_dir)]
    seen, out = set(), []
    for p in found:
        if p.is_file() and p.resolve() not in seen:
            seen.add(p.resolve())
            out.append(p)
    return out


def _preference_method(reg: Registry, rnd: int) -> dict[str, Any] | None:
    """``preference.json`` of the round's ``prefer_recon`` checkpoint (method, parent, last trainer log)."""
    run = reg.run_dir
    cands = [run / a["path"] / "preference.json" for a in reg.artifacts(rnd=rnd) if a["stage"] == "prefer_recon"]
    stage_dir = run / "rounds" / f"{rnd:04d}" / "prefer_recon"
    if stage_dir.is_dir():
        cands += sorted(stage_dir.rglob("preference.json"))
    for p in cands:
        if p.is_file():
            try:
                return json.loads(p.read_text())
            except (OSError, json.JSONDecodeError):
                continue
    return None


def _eval_json(reg: Registry, rnd: int) -> dict[str, Any] | None:
    for a in reg.artifacts(rnd=rnd, name="eval"):
        p = reg.run_dir / a["path"]
        if p.is_file():
            try:
                return json.loads(p.read_text())
            except (OSError, json.JSONDecodeError):
                return None
    return None


def _glbs(run_dir: Path, rnd: int) -> list[str]:
    round_dir = run_dir / "rounds" / f"{rnd:04d}"
    if not round_dir.is_dir():
        return []
    return [p.relative_to(run_dir).as_posix() for p in sorted(round_dir.rglob("*.glb")) if _visible(p, round_dir)]


def _store_summary(values: dict[str, Any]) -> dict[str, Any]:
    n = values["samples"]
    return {
        "samples": n,
        "degenerate_frac": values["degenerate"] / n if n else None,
        "combined": _stats(values["combined"]),
        "mode_combined": _stats(values["mode_combined"]),
        "terms": {k: _stats(v) for k, v in sorted(values["terms"].items())},
        "margins": {s: _stats(v) for s, v in sorted(values["margins"].items())},
    }


def collect(run_dir: str | Path, rounds: list[int] | None = None, *, with_values: bool = False) -> dict[str, Any]:
    """The numbers of the report (what ``--json`` prints).

    ``with_values`` adds ``_values`` per round (raw rewards and margins, for the histograms)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise Vibe3rError(f"run directory {run_dir} does not exist")
    reg = open_registry_ro(run_dir)
    try:
        all_rounds = [r["round"] for r in reg.rounds()]
        if rounds:
            missing = [r for r in rounds if r not in all_rounds]
            if missing:
                have = ", ".join(map(str, all_rounds)) or "none"
                raise Vibe3rError(f"round {missing[0]} is not in {run_dir} (rounds: {have})")
            chosen = sorted(set(rounds))
        else:
            chosen = all_rounds
        metrics = reg.metrics()
        ckpts = {r["round"]: dict(r) for r in reg.checkpoints()}
        states = {r["round"]: r["state"] for r in reg.rounds()}

        # human duels over every store of the run (cross-round labels may live in any of them)
        stores = {rnd: _round_stores(reg, rnd) for rnd in all_rounds}
        run_store = run_dir / STORE_NAME
        every_store = {p.resolve(): p for ps in stores.values() for p in ps}
        if run_store.is_file():
            every_store.setdefault(run_store.resolve(), run_store)
        duels = [d for p in every_store.values() for d in human_duels(p)]

        out_rounds = []
        for rnd in chosen:
            m = metrics.get(rnd, {})
            stages = [{"name": s["name"], "state": s["state"], "seconds": s["seconds"]} for s in reg.stages(rnd)]
            ck = ckpts.get(rnd)
            values = None
            for p in stores[rnd]:
                v = read_store(p, rnd)
                if values is None:
                    values = v
                else:  # several stores in one round: pool them
                    values["samples"] += v["samples"]
                    values["degenerate"] += v["degenerate"]
                    for k in ("combined", "mode_combined"):
                        values[k] += v[k]
                    for key in ("terms", "margins"):
                        for k, vals in v[key].items():
                            values[key].setdefault(k, []).extend(vals)
            pm = _preference_method(reg, rnd)
            prefer_metrics = {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith("prefer_recon/")}
            method = (pm or {}).get("method") or next(
                (meth for meth in ("dpo", "grpo") if any(k.startswith(f"{meth}_") for k in prefer_metrics)), None)
            ev = _eval_json(reg, rnd)
            variants = {k: v for k, v in (ev or {}).items() if k not in ("candidate", "parent") and isinstance(v, dict)}
            prev = max((r for r in all_rounds if r < rnd), default=None)
            if prev is None and any(0 in (a, b) for a, b, _ in duels):
                prev = 0  # the first round against the base checkpoint (round 0), when evaluators judged that
            human = None if prev is None else win_rate(duels, rnd, prev)
            rec: dict[str, Any] = {
                "round": rnd,
                "state": states[rnd],
                "stages": stages,
                "metrics": m,
                "promoted": None if ck is None else bool(ck["promoted"]),
                "checkpoint": ck,
                "evaluated": any(k.startswith("evaluate/") for k in m),
                "eval_variants": variants,
                "preference": None if values is None else {
                    "stores": [p.relative_to(run_dir).as_posix() if p.is_relative_to(run_dir) else str(p) for p in stores[rnd]],
                    **_store_summary(values)},
                "sft": {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith("train_recon/")} or None,
                "prefer": None if not prefer_metrics and pm is None else {"method": method, "metrics": prefer_metrics},
                "human_vs_previous": human,
                "glb": _glbs(run_dir, rnd),
            }
            if with_values:
                rec["_values"] = values
            out_rounds.append(rec)
        return {"run": str(run_dir), "rounds": out_rounds, "human_labels": len(duels),
                "live_round": next((r["round"] for r in reversed(reg.checkpoints()) if r["promoted"]), None)}
    finally:
        reg.close()


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _series(rounds: list[dict], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in rounds:
        v = r["metrics"].get(key)
        if v is not None:
            xs.append(r["round"])
            ys.append(v)
    return xs, ys


def plot_metrics(rounds: list[dict]) -> dict[str, str]:
    """AUC@10 per round (candidate solid, live parent dashed, promotion marked) and losses per round."""
    from matplotlib.figure import Figure

    figs: dict[str, str] = {}
    auc_keys = [("evaluate/heldout_auc10", "held-out synthetic AUC@10", "C0"), ("evaluate/real_auc10", "real AUC@10", "C1")]
    if any(_series(rounds, k)[0] for k, _, _ in auc_keys):
        fig = Figure(figsize=(6.4, 3.6))
        ax = fig.add_subplot()
        for key, label, color in auc_keys:
            xs, ys = _series(rounds, key)
            if xs:
                ax.plot(xs, ys, "-", color=color, label=label)
                px, py = _series(rounds, key.replace("evaluate/", "evaluate/parent_"))
                if px:
                    ax.plot(px, py, "--", color=color, alpha=0.6, label=f"{label} (live parent)")
                for x, y in zip(xs, ys):
                    pr = next(r["promoted"] for r in rounds if r["round"] == x)
                    ax.plot([x], [y], "o" if pr else "x", color="green" if pr else "red", ms=8, mew=2)
        ax.plot([], [], "o", color="green", label="promoted")
        ax.plot([], [], "x", color="red", mew=2, label="not promoted")
        ax.set_xlabel("round")
        ax.set_ylabel("AUC@10 (%)")
        ax.set_xticks([r["round"] for r in rounds])
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        figs["auc"] = _png(fig)
    loss_keys = [("train_recon/final_loss", "train loss (last step)"), ("evaluate/heldout_loss", "held-out loss"),
                 ("evaluate/parent_heldout_loss", "held-out loss (live parent)")]
    pref_losses = sorted({k for r in rounds for k in r["metrics"] if k.startswith("prefer_recon/") and k.endswith("loss")})
    loss_keys += [(k, k.split("/", 1)[1]) for k in pref_losses]
    if any(_series(rounds, k)[0] for k, _ in loss_keys):
        fig = Figure(figsize=(6.4, 3.6))
        ax = fig.add_subplot()
        for key, label in loss_keys:
            xs, ys = _series(rounds, key)
            if xs:
                ax.plot(xs, ys, "o-" if "parent" not in key else "o--", label=label)
        ax.set_xlabel("round")
        ax.set_ylabel("loss")
        ax.set_xticks([r["round"] for r in rounds])
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        figs["losses"] = _png(fig)
    return figs


def plot_rewards(rounds: list[dict]) -> dict[str, str]:
    """Histograms per round of the combined reward and every term; degenerate fraction; preference margins."""
    from matplotlib.figure import Figure

    figs: dict[str, str] = {}
    withv = [r for r in rounds if r.get("_values")]
    if not withv:
        return figs
    terms = sorted({t for r in withv for t in r["_values"]["terms"]})
    panels = ["combined", *terms, "degenerate"]
    cols = min(3, len(panels))
    rows_ = (len(panels) + cols - 1) // cols
    fig = Figure(figsize=(4.0 * cols, 3.0 * rows_))
    for i, name in enumerate(panels):
        ax = fig.add_subplot(rows_, cols, i + 1)
        if name == "degenerate":
            xs = [r["round"] for r in withv]
            ys = [r["_values"]["degenerate"] / max(1, r["_values"]["samples"]) for r in withv]
            ax.bar([str(x) for x in xs], ys, color="C3")
            ax.set_title("degenerate fraction", fontsize=9)
            ax.set_xlabel("round")
            continue
        vals = {r["round"]: (r["_values"]["combined"] if name == "combined" else r["_values"]["terms"].get(name, [])) for r in withv}
        allv = np.concatenate([np.asarray(v, float) for v in vals.values() if v] or [np.zeros(0)])
        if allv.size == 0:
            ax.set_title(f"{name}: no values", fontsize=9)
            continue
        bins = np.histogram_bin_edges(allv, bins=20)
        for k, (rnd, v) in enumerate(vals.items()):
            if v:
                ax.hist(v, bins=bins, histtype="step", lw=1.5, color=f"C{k % 10}", label=f"round {rnd}")
        ax.set_title(name + (" reward" if name == "combined" else " term"), fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    figs["rewards"] = _png(fig)
    sources = sorted({s for r in withv for s in r["_values"]["margins"]})
    if sources:
        fig = Figure(figsize=(4.0 * len(sources), 3.0))
        for i, src in enumerate(sources):
            ax = fig.add_subplot(1, len(sources), i + 1)
            vals = {r["round"]: r["_values"]["margins"].get(src, []) for r in withv}
            allv = np.concatenate([np.asarray(v, float) for v in vals.values() if v])
            bins = np.histogram_bin_edges(allv, bins=20)
            for k, (rnd, v) in enumerate(vals.items()):
                if v:
                    ax.hist(v, bins=bins, histtype="step", lw=1.5, color=f"C{k % 10}", label=f"round {rnd}")
            ax.set_title(f"preference margins ({src})", fontsize=9)
            ax.set_xlabel("chosen - rejected combined reward")
            ax.legend(fontsize=7)
        fig.tight_layout()
        figs["margins"] = _png(fig)
    return figs


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------

_CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.absent{color:#999}.no{color:#b00}.yes{color:#070}
img{max-width:100%;border:1px solid #eee;margin:.3em 0}h2{margin-top:1.4em;border-bottom:1px solid #ddd}"""

ABSENT = '<span class="absent">absent</span>'


def _f(v: Any, fmt: str = ".4g") -> str:
    if v is None:
        return ABSENT
    if isinstance(v, float):
        return format(v, fmt)
    return html.escape(str(v))


def _img(figs: dict[str, str], key: str, alt: str, none: str) -> str:
    if key not in figs:
        return f'<p class="absent">{html.escape(none)}</p>'
    return f'<img id="fig-{key}" alt="{html.escape(alt)}" src="data:image/png;base64,{figs[key]}">'


def _table(header: list[str], rows: list[list[str]], first_left: bool = True) -> str:
    th = "".join(f'<th{" class=l" if i == 0 and first_left else ""}>{html.escape(h)}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td{" class=l" if i == 0 and first_left else ""}>{c}</td>' for i, c in enumerate(r)) + "</tr>\n"
                   for r in rows)
    return f"<table><tr>{th}</tr>\n{body}</table>"


def _human_cell(r: dict, total: int) -> str:
    h = r["human_vs_previous"]
    if total == 0:
        return '<span class="absent">no human labels yet</span>'
    if h is None:
        return '<span class="absent">first round</span>'
    versus = "the base" if h["previous"] == 0 else f'round {h["previous"]}'
    if h["win_rate"] is None:
        return f'<span class="absent">no human labels vs {versus}</span>'
    ties = f', {h["ties"]} tie{"s" if h["ties"] != 1 else ""}' if h["ties"] else ""
    return f'{h["win_rate"]:.0%} vs {versus} (n={h["n"]}: {h["wins"]} won, {h["losses"]} lost{ties})'


def _glb_cell(r: dict, run_dir: Path, out_dir: Path, media: dict[str, Any] | None = None) -> str:
    """The GLBs in the round folder, and the round's trajectory reconstruction (``report_media``) when it was made."""
    links = []
    for rel in r["glb"]:
        href = os.path.relpath((run_dir / rel).resolve(), out_dir.resolve())
        links.append(f'<a href="{html.escape(Path(href).as_posix())}">{html.escape(Path(rel).name)}</a>')
    t = ((media or {}).get("rounds", {}).get(r["round"]) or {}).get("trajectory") or {}
    if "glb" in t:
        href = Path(os.path.relpath(Path(t["glb"]).resolve(), out_dir.resolve())).as_posix()
        links.append(f'<a href="{html.escape(href)}" title="the trajectory sequence reconstructed with this round\'s checkpoint">'
                     "trajectory GLB</a>")
    return " ".join(links) if links else '<span class="absent">none</span>'


def _sign(v: Any, fmt: str = ".3g") -> str:
    return ABSENT if v is None else format(v, fmt)


def _media_sections(media: dict[str, Any] | None, rounds: list[dict], out_dir: Path) -> list[str]:
    """The chosen-vs-rejected, generator and trajectory sections (``media`` from ``report_media.collect_media``)."""
    if media is None:
        off = '<p class="absent">pictures turned off (<code>media=False</code> / <code>VIBE3R_REPORT_MEDIA=0</code>)</p>'
        return ["<h2>Chosen vs rejected (real captures)</h2>", off, "<h2>Generator</h2>", off,
                "<h2>Camera trajectories (predicted vs GT)</h2>", off]
    per = media["rounds"]
    absent = lambda rnd, what: f'<p class="absent">round {rnd}: {html.escape(what)}</p>'  # noqa: E731

    prefs = ['<p class="absent">the two frames of a pair, above with the chosen sample\'s matches, below with the rejected one\'s; '
             "each line coloured by its Sampson distance under that sample's own relative pose (cell centres of the "
             "descriptor grid; largest, median and smallest margin of the round).</p>"]
    for r in rounds:
        rnd = r["round"]
        p = per[rnd]["prefs"]
        if "items" not in p:
            prefs.append(absent(rnd, f"no examples ({p['absent']})"))
            continue
        prefs.append(f"<h3>round {rnd}</h3>")
        for k, it in enumerate(p["items"]):
            c = it["caption"]
            rows = []
            for side in ("chosen", "rejected"):
                sd = c[side]
                terms = "; ".join(f"{html.escape(t)} {v:.3g}" for t, v in sorted(sd["rewards"].items()) if isinstance(v, (int, float))) or ABSENT
                rows.append([side, _sign(sd["combined"]), terms, str(sd["matches"]), _sign(sd.get("median_sampson_px"), ".2g"),
                             _sign(sd.get("rot_err_deg"), ".1f"), html.escape(sd["degenerate"] or "")])
            name = html.escape(Path(str(c["spec"]).split("@")[0]).name)
            prefs.append(f'<figure><img id="media-pref-{rnd}-{k}" alt="round {rnd} chosen vs rejected" '
                         f'src="data:image/png;base64,{it["png"]}"><figcaption>{name} frames {c["i"]} | {c["j"]}, '
                         f'margin {c["margin"]:.3g}</figcaption></figure>')
            prefs.append(_table(["sample", "combined reward", "reward terms", "matches", "median Sampson px", "rot err vs GT (°)", "degenerate"], rows))

    gen_rows, strips = [], []
    for r in rounds:
        rnd = r["round"]
        g = per[rnd]["generator"]
        if "absent" in g:
            gen_rows.append([str(rnd), *[ABSENT] * 6, f'<span class="absent">{html.escape(g["absent"])}</span>'])
            continue
        j = g.get("json") or {}
        ce, pe = j.get("candidate") or {}, j.get("parent_eval") or {}
        err = lambda d, judge: (d.get(judge) or {}).get("rot_err")  # noqa: E731
        kept = j.get("kept_candidate")
        gen_rows.append([str(rnd), ABSENT if kept is None else ("candidate" if kept else "parent"),
                         _sign(err(ce, "recon")), _sign(err(pe, "recon")), _sign(err(ce, "flow")), _sign(err(pe, "flow")),
                         _sign(ce.get("psnr_to_render")), html.escape(g.get("json_absent", ""))])
        if "png" in g:
            pr = g["prompt"]
            ref = "top: the renderer's frames for the prompt's cameras; bottom: " if pr.get("reference") else ""
            strips.append(f'<figure><img id="media-gen-{rnd}" alt="round {rnd} generated frames" src="data:image/png;base64,{g["png"]}">'
                          f"<figcaption>round {rnd}: {ref}the round's generator ({pr['frames']} frames {pr['size'][0]}x{pr['size'][1]}, "
                          f"{pr['steps']} DDIM steps, seed fixed) on held-out prompt {html.escape(pr['prompt'])}</figcaption></figure>")
        else:
            strips.append(absent(rnd, f"no frame strip ({g.get('strip_absent', 'absent')})"))
    gen = [_table(["round", "generator kept", "candidate rot err (°, base judge)", "parent rot err (°, base judge)",
                   "candidate rot err (°, flow judge)", "parent rot err (°, flow judge)", "candidate PSNR to render (dB)", "note"], gen_rows),
           *strips]

    traj_rows = []
    base = media.get("base")
    for r in ([{"round": 0}] if base else []) + rounds:
        rnd = r["round"]
        t = base if rnd == 0 else per[rnd]["trajectory"]
        if "absent" in t:
            traj_rows.append([str(rnd), ABSENT, ABSENT, f'<span class="absent">{html.escape(t["absent"])}</span>'])
            continue
        href = Path(os.path.relpath(Path(t["glb"]).resolve(), out_dir.resolve())).as_posix()
        traj_rows.append(["base" if rnd == 0 else str(rnd), f'{t["ate"]:.3f}', _sign(t.get("rpe_rot_deg"), ".2f"),
                          f'<a href="{html.escape(href)}">scene.glb</a>'])
    spec = media["settings"]["trajectory"]
    traj = [f'<p class="absent">{html.escape(str(spec))} ({media["settings"]["size"]} px, {media["settings"]["iters"]} alignment '
            "iterations) reconstructed with each round's final checkpoint; camera centres Sim(3)-aligned to the ground truth "
            "(Umeyama), drawn in the plane of the GT trajectory's two principal axes; the square marks the first frame.</p>",
            '<p class="absent">no trajectory in these rounds</p>' if not media["trajectories"] else
            f'<img id="media-trajectories" alt="camera trajectories" src="data:image/png;base64,{media["trajectories"]}">',
            _table(["round", "ATE Sim(3) (m)", "RPE rot (°)", "reconstruction"], traj_rows)]
    c = media["cache"]
    note = (f'<p class="absent">pictures: {media["seconds"]:.1f} s, {c["hits"]} from the cache, {c["builds"]} built '
            f'(<code>{html.escape(c["dir"])}</code>).</p>')
    return ["<h2>Chosen vs rejected (real captures)</h2>", *prefs, "<h2>Generator</h2>", *gen,
            "<h2>Camera trajectories (predicted vs GT)</h2>", *traj, note]


def render_html(data: dict[str, Any], out: Path, media: dict[str, Any] | None = None) -> str:
    """The report as one HTML string (``data`` from :func:`collect` with ``with_values=True``; ``media`` from
    :func:`vibe3r.loop.report_media.collect_media`, None: no pictures)."""
    run_dir = Path(data["run"])
    rounds = data["rounds"]
    figs = {**plot_metrics(rounds), **plot_rewards(rounds)}
    m = lambda r, k: _f(r["metrics"].get(k))  # noqa: E731

    def pair(r: dict, k: str) -> str:
        v, p = r["metrics"].get(f"evaluate/{k}"), r["metrics"].get(f"evaluate/parent_{k}")
        return _f(v) + ("" if p is None else f' <span class="absent">(live {_f(p)})</span>')

    def promo(r: dict) -> str:
        if r["promoted"] is None:
            return ABSENT
        reason = html.escape(r["checkpoint"]["reason"])
        return f'<span class="yes" title="{reason}">yes</span>' if r["promoted"] else f'<span class="no">no</span>: {reason}'

    def _gen_cell(r: dict) -> str:
        """The round's generator camera error on held-out prompts (base judge), with its parent's."""
        v, p = r["metrics"].get("prefer_video/gen_rot_err"), r["metrics"].get("prefer_video/gen_parent_rot_err")
        if v is None:
            return ABSENT
        kept = r["metrics"].get("prefer_video/gen_kept")
        note = "" if p is None else f' <span class="absent">(parent {_f(p)}{", kept" if kept else ", parent kept"})</span>'
        return _f(v) + note

    summary = _table(
        ["round", "state", "held-out AUC@10", "real AUC@10", "held-out loss", "depth AbsRel", "train loss", "promoted",
         "mean reward", "degenerate", "human win rate", "generator rot err (°)", "reconstruction"],
        [[str(r["round"]), html.escape(r["state"]), pair(r, "heldout_auc10"), pair(r, "real_auc10"), pair(r, "heldout_loss"),
          m(r, "evaluate/heldout_depth_absrel"), m(r, "train_recon/final_loss"), promo(r),
          _f(None if r["preference"] is None or r["preference"]["combined"] is None else r["preference"]["combined"]["mean"]),
          _f(None if r["preference"] is None else r["preference"]["degenerate_frac"], ".1%"),
          _human_cell(r, data["human_labels"]), _gen_cell(r), _glb_cell(r, run_dir, out.parent, media)] for r in rounds])
    names = sorted({k for r in rounds for k in r["metrics"]})
    full = _table(["metric", *[f"round {r['round']}" for r in rounds]],
                  [[html.escape(n), *[m(r, n) for r in rounds]] for n in names]) if names else '<p class="absent">no metrics recorded</p>'

    # rewards and margins
    pref_rows = []
    for r in rounds:
        p = r["preference"]
        if p is None:
            pref_rows.append([str(r["round"]), *[ABSENT] * 6])
            continue
        c = p["combined"] or {}
        marg = "; ".join(f"{html.escape(s)}: {st['n']} (mean {st['mean']:.3g})" for s, st in p["margins"].items() if st) or ABSENT
        terms = "; ".join(f"{html.escape(k)} {st['mean']:.3g}" for k, st in p["terms"].items() if st) or ABSENT
        pref_rows.append([str(r["round"]), str(p["samples"]), _f(p["degenerate_frac"], ".1%"), _f(c.get("mean")),
                          _f(c.get("median")), terms, marg])
    pref_table = _table(["round", "samples", "degenerate", "combined mean", "combined median", "term means", "preferences (margin)"], pref_rows)

    # SFT vs DPO vs GRPO
    sft_rows = []
    for r in rounds:
        pm = (r["prefer"] or {}).get("metrics", {})
        meth = (r["prefer"] or {}).get("method")
        method = "SFT only" if r["prefer"] is None else ("SFT → " + (meth.upper() if meth else "preference"))
        pref_vals = "; ".join(f"{html.escape(k)} {_f(v)}" for k, v in sorted(pm.items())) or ABSENT
        sft = r["sft"] or {}
        sft_rows.append([str(r["round"]), html.escape(method), _f(sft.get("final_loss")), _f(sft.get("final_match_acc")), pref_vals,
                         pair(r, "heldout_auc10"), pair(r, "real_auc10")])
        for name, ev in r["eval_variants"].items():
            sft_rows.append([f'{r["round"]} ({html.escape(name)})', html.escape(name), ABSENT, ABSENT, ABSENT,
                             _f(ev.get("heldout_auc10")), _f(ev.get("real_auc10"))])
    sft_table = _table(["round", "method", "SFT train loss", "SFT match acc", "preference stage (last logged)",
                        "held-out AUC@10", "real AUC@10"], sft_rows)

    stage_rows = [[str(r["round"]), " ".join(f"{html.escape(s['name'])}:{html.escape(s['state'])}"
                                             + ("" if s["seconds"] is None else f" {s['seconds']:.0f}s") for s in r["stages"]) or ABSENT]
                  for r in rounds]
    human_note = ("no human labels yet" if data["human_labels"] == 0
                  else f"{data['human_labels']} human labels in the run's preference stores")
    live = data["live_round"]
    parts = [
        f"<!doctype html><html><head><meta charset=utf-8><title>vibe3r loop compare: {html.escape(str(run_dir))}</title>"
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Loop rounds of <code>{html.escape(str(run_dir))}</code></h1>",
        f"<p>rounds {', '.join(str(r['round']) for r in rounds) or 'none'}; live checkpoint: "
        + (f"round {live}" if live else "the base (no round promoted)") + f"; {html.escape(human_note)}.</p>",
        "<h2>Rounds</h2>", summary,
        "<h2>Held-out metrics and promotion</h2>", _img(figs, "auc", "AUC@10 per round", "no evaluation in these rounds"),
        _img(figs, "losses", "losses per round", "no losses recorded in these rounds"),
        "<h2>Rewards on real captures</h2>", pref_table,
        _img(figs, "rewards", "reward distributions per round", "no preference store in these rounds"),
        _img(figs, "margins", "preference margins per round", "no preferences in these rounds"),
        "<h2>SFT vs DPO vs GRPO</h2>", sft_table,
        '<p class="absent">held-out AUC is of the round\'s final checkpoint: after the preference stage when one ran '
        "(an <code>eval.json</code> that also evaluates the SFT checkpoint adds its own row).</p>",
        *_media_sections(media, rounds, out.parent),
        "<h2>All metrics</h2>", full,
        "<h2>Stages</h2>", _table(["round", "stages"], stage_rows),
        "</body></html>\n",
    ]
    return "\n".join(parts)


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "rounds": [{k: v for k, v in r.items() if not k.startswith("_")} for r in data["rounds"]]}


def compare(run_dir: str | Path, out: str | Path | None = None, rounds: list[int] | None = None, media: bool | None = None,
            media_settings: Any = None) -> dict[str, Any]:
    """Collect the numbers, write the HTML report to ``out`` (when given, atomically); returns the numbers.

    ``media`` (default: on unless the environment sets ``VIBE3R_REPORT_MEDIA=0``) adds the pictures of
    ``vibe3r.loop.report_media`` (``media_settings``: its ``MediaSettings``) to the report and their numbers
    to the result (``media``)."""
    data = collect(run_dir, rounds, with_values=out is not None)
    if media is None:
        media = os.environ.get("VIBE3R_REPORT_MEDIA", "1") != "0"
    pics = None
    if out is not None:
        if media:
            from vibe3r.loop.report_media import collect_media

            pics = collect_media(run_dir, data["rounds"], media_settings)
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(render_html(data, out, pics))
        os.replace(tmp, out)
    res = _jsonable(data)
    if pics is not None:
        from vibe3r.loop.report_media import media_summary

        res["media"] = media_summary(pics)
    return res
