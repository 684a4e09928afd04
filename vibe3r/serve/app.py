"""The web app: FastAPI routes over the job queue, static pages from the package.

FastAPI rather than Gradio: the app is a queue with a few JSON routes and two pages, and what the issue
asks of it (a SQLite queue that survives restarts, per-client limits, upload checks before decoding,
HTTP Basic auth, size limits enforced while streaming) is plain request handling that Gradio would have
to be worked around for. The 3D viewer is ``static/viewer.js``, a small WebGL GLB viewer shipped in the
package (no CDN: the server works offline).

Routes: ``GET /`` upload page, ``GET /jobs/{id}`` job page, ``POST /api/jobs`` upload, ``GET /api/jobs``
this client's jobs, ``GET /api/jobs/{id}``, ``GET /api/jobs/{id}/files/{name}`` downloads, ``GET /healthz``.

Evaluator (``--run RUN``): ``GET /evaluate`` the page, ``GET /api/evaluate/next?annotator=NAME`` the next
comparison that evaluator has not judged (with the builder's progress), ``POST /api/evaluate/{id}``
``{"verdict": "a" | "b" | "tie", "annotator": NAME}`` records a judgement (under ``--auth`` the evaluator
is the authenticated user), ``GET /api/evaluate/files/{reconstruction id}/{name}`` its renders and GLB.
The comparisons are built by a separate process (``vibe3r.serve.evaluator``) started with the server.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import secrets
import shutil
import threading
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from vibe3r.errors import InputError
from vibe3r.serve import evaluator as E
from vibe3r.serve import uploads as U
from vibe3r.serve.config import ServeConfig
from vibe3r.serve.jobs import JobStore
from vibe3r.serve.worker import EvalBuilder, Worker

STATIC = Path(__file__).parent / "static"
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
# downloads: public name -> file in the job's out/ folder (nothing else is ever served from there)
DOWNLOADS = {"scene.glb": "scene.glb", "scene.ply": "scene.ply", "mesh.ply": "mesh.ply", "colmap.zip": "colmap.zip",
             "nerfstudio.zip": "nerfstudio.zip", "cameras.json": "cameras.json", "report.json": "report.json"}
MEDIA = {".glb": "model/gltf-binary", ".ply": "application/octet-stream", ".zip": "application/zip", ".json": "application/json"}
FORM_OVERHEAD = 1 << 20  # multipart boundaries and the other fields, on top of the file bytes

log = logging.getLogger("vibe3r.serve")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(cfg: ServeConfig, start_worker: bool = True) -> FastAPI:
    """The app over ``cfg.data``; with ``start_worker`` the lifespan runs the worker and re-queues jobs a
    previous server left running."""
    store = JobStore(cfg.db_path)
    worker = Worker(cfg, store)
    builder = EvalBuilder(cfg) if cfg.evaluate.run is not None else None
    submit_lock = threading.Lock()
    max_body = int(cfg.limits.max_upload_mb * 2**20)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        back = store.requeue_running()
        if back:
            log.info("re-queued %d job(s) left running: %s", len(back), ", ".join(back))
        if start_worker:
            worker.start()
            if builder is not None:
                builder.start()
        yield
        if start_worker:
            await run_in_threadpool(worker.stop)
            if builder is not None:
                await run_in_threadpool(builder.stop)

    app = FastAPI(title="vibe3r", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.cfg, app.state.store, app.state.worker, app.state.builder = cfg, store, worker, builder

    if cfg.auth is not None:
        user, password = cfg.auth.split(":", 1)

        @app.middleware("http")
        async def basic_auth(request: Request, call_next):
            ok = False
            header = request.headers.get("authorization", "")
            if header.lower().startswith("basic "):
                try:
                    u, _, p = base64.b64decode(header[6:]).decode("utf-8").partition(":")
                    ok = secrets.compare_digest(u.encode(), user.encode()) & secrets.compare_digest(p.encode(), password.encode())
                except (binascii.Error, UnicodeDecodeError):
                    ok = False
            if not ok:
                return JSONResponse({"error": "authentication required"}, status_code=401,
                                    headers={"WWW-Authenticate": 'Basic realm="vibe3r"'})
            return await call_next(request)

    @app.middleware("http")
    async def body_limit(request: Request, call_next):
        """Refuse an upload by its announced length before reading it (the copy also counts, see save_stream)."""
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None:
                return _error(411, "uploads need a Content-Length")
            if not length.isdigit() or int(length) > max_body + FORM_OVERHEAD:
                return _error(413, f"the upload is larger than the limit of {cfg.limits.max_upload_mb:.0f} MB")
        return await call_next(request)

    def client_of(request: Request) -> str:
        host = request.client.host if request.client else "unknown"
        if cfg.auth is not None:
            return f"{host}|{cfg.auth.split(':', 1)[0]}"
        return host

    def public(job: dict[str, Any]) -> dict[str, Any]:
        out_dir = cfg.jobs_dir / job["id"] / "out"
        files = [k for k, v in DOWNLOADS.items() if job["state"] == "done" and (out_dir / v).is_file()]
        keys = ("id", "state", "phase", "progress", "fraction", "error", "created", "started", "finished", "display_name",
                "kind", "input_bytes", "info", "contribute", "result", "attempts")
        d = {k: job[k] for k in keys}
        d["pooled"] = job["pooled"] is not None
        d["queue_position"] = store.queue_position(job["id"])
        d["files"] = {k: f"/api/jobs/{job['id']}/files/{k}" for k in files}
        d["url"] = f"/jobs/{job['id']}"
        return d

    def accept(files: list[UploadFile], job_dir: Path) -> tuple[str, str, int, dict]:
        """Save and check the upload in the job's input folder; (kind, display name, bytes, info)."""
        budget = max_body
        inp = job_dir / "input"
        if len(files) == 1:
            path, kind, n = U.save_stream(files[0].file, inp, "video", budget)
            if kind in U.PHOTO_TYPES:
                raise InputError("a single photo cannot be reconstructed: upload a video, or at least 2 photos of the room")
            info = U.check_video(path, cfg.limits)
            return "video", files[0].filename or "video", n, info
        if len(files) > cfg.limits.max_photos:
            raise InputError(f"too many photos: {len(files)}, the limit is {cfg.limits.max_photos}")
        total, sizes = 0, set()
        for i, f in enumerate(files):
            path, kind, n = U.save_stream(f.file, inp / "images", f"{i:05d}", budget - total)
            total += n
            if kind not in U.PHOTO_TYPES:
                raise InputError("upload one video, or several photos; not several videos or a mix")
            sizes.add(U.check_photo(path, cfg.limits))
        if len(sizes) > 1:
            raise InputError(f"the photos have {len(sizes)} different sizes; upload photos taken with one camera setting")
        w, h = sizes.pop()
        return "images", f"{len(files)} photos", total, {"photos": len(files), "width": w, "height": h}

    @app.post("/api/jobs")
    async def submit(request: Request):
        client = client_of(request)
        try:
            form = await request.form(max_files=cfg.limits.max_photos + 1, max_fields=20)
        except Exception as exc:  # malformed multipart, too many parts
            return _error(400, f"the upload could not be read: {exc}")
        try:
            files = [f for f in form.getlist("file") if isinstance(f, UploadFile)]
            files = [f for f in files if f.filename or f.size]
            if not files:
                return _error(400, "no file in the upload: choose a video (mp4, mov, webm) or several photos")
            contribute = str(form.get("contribute", "")).lower() in ("1", "on", "true", "yes")
            if store.count_active(client) >= cfg.limits.jobs_per_client:
                return _error(429, f"you already have {cfg.limits.jobs_per_client} jobs queued or running; "
                                   "wait for one to finish")
            job_id = uuid.uuid4().hex
            job_dir = cfg.jobs_dir / job_id
            try:
                kind, name, n, info = await run_in_threadpool(accept, files, job_dir)
            except U.TooLarge as exc:
                shutil.rmtree(job_dir, ignore_errors=True)
                return _error(413, str(exc))
            except InputError as exc:
                shutil.rmtree(job_dir, ignore_errors=True)
                return _error(400, str(exc))
            with submit_lock:  # the per-client count and the insert together
                if store.count_active(client) >= cfg.limits.jobs_per_client:
                    shutil.rmtree(job_dir, ignore_errors=True)
                    return _error(429, f"you already have {cfg.limits.jobs_per_client} jobs queued or running; "
                                       "wait for one to finish")
                store.create(client, kind, name, n, info, contribute, job_id=job_id)
            return JSONResponse(public(store.get(job_id)), status_code=201)
        finally:
            await form.close()

    @app.get("/api/jobs")
    async def list_jobs(request: Request):
        return {"jobs": [public(j) for j in store.list(client_of(request))]}

    @app.get("/api/jobs/{job_id}")
    async def get_job(job_id: str):
        job = store.get(job_id) if JOB_ID.match(job_id) else None
        if job is None:
            return _error(404, "no such job")
        return public(job)

    @app.get("/api/jobs/{job_id}/files/{name}")
    async def download(job_id: str, name: str):
        job = store.get(job_id) if JOB_ID.match(job_id) else None
        if job is None or name not in DOWNLOADS:
            return _error(404, "no such file")
        path = cfg.jobs_dir / job_id / "out" / DOWNLOADS[name]
        if job["state"] != "done" or not path.is_file():
            return _error(404, f"{name} is not available for this job")
        return FileResponse(path, media_type=MEDIA.get(path.suffix, "application/octet-stream"),
                            filename=f"vibe3r-{job_id[:8]}-{name}")

    # ---- evaluator ---------------------------------------------------------------------------

    def pref_store():  # noqa: ANN202 - one connection per request (sqlite connections stay in their thread)
        from vibe3r.preference.store import PreferenceStore

        return PreferenceStore(cfg.evaluate.run / E.STORE_NAME)

    no_run = ("this server compares no loop run: start it with `vibe3r serve --run runs/NAME` to judge its rounds")

    def evaluator_of(request: Request, given: str | None) -> str:
        if cfg.auth is not None:
            return cfg.auth.split(":", 1)[0]
        return (given or "").strip()[:100]

    def side(rec: Any) -> dict[str, Any]:
        f = lambda name: f"/api/evaluate/files/{rec.id}/{name}"  # noqa: E731
        return {"glb": f("scene.glb"), "views": [f("view0.png"), f("view1.png")]}

    def next_item(annotator: str) -> dict[str, Any]:
        with pref_store() as st:
            total = st.db.execute("SELECT COUNT(*) FROM comparisons").fetchone()[0]
            judged = st.db.execute("SELECT COUNT(*) FROM judgements WHERE annotator=?", (annotator,)).fetchone()[0]
            nxt = st.next_comparison(annotator) if annotator else None
        item = None
        if nxt is not None:
            cid, a, b = nxt
            item = {"id": cid, "capture": Path(a.capture_spec.split("@")[0]).name, "frames": len(a.frames),
                    "input": f"/api/evaluate/files/{a.id}/input.png", "a": side(a), "b": side(b)}
        return {"annotator": annotator, "fixed_annotator": cfg.auth is not None, "item": item,
                "progress": {"comparisons": total, "judged": judged, **(builder.status() if builder else {})}}

    @app.get("/api/evaluate/next")
    async def evaluate_next(request: Request, annotator: str | None = None):
        if cfg.evaluate.run is None:
            return _error(404, no_run)
        return await run_in_threadpool(next_item, evaluator_of(request, annotator))

    @app.post("/api/evaluate/{cid}")
    async def evaluate_submit(request: Request, cid: str):
        from vibe3r.preference.store import DuplicateJudgement

        if cfg.evaluate.run is None:
            return _error(404, no_run)
        try:
            body = await request.json()
        except ValueError:
            return _error(400, 'send JSON: {"verdict": "a" | "b" | "tie", "annotator": "your name"}')
        if not isinstance(body, dict):
            return _error(400, 'send JSON: {"verdict": "a" | "b" | "tie", "annotator": "your name"}')
        if not cid.isdigit():
            return _error(404, f"no comparison {cid[:40]!r}")
        who = evaluator_of(request, body.get("annotator") if isinstance(body.get("annotator"), str) else None)
        if not who:
            return _error(400, "enter your name before judging (it is recorded with your verdict)")

        def record() -> int:
            with pref_store() as st:
                if st.db.execute("SELECT 1 FROM comparisons WHERE id=?", (int(cid),)).fetchone() is None:
                    raise LookupError
                return st.add_judgement(int(cid), str(body.get("verdict")), who)
        try:
            jid = await run_in_threadpool(record)
        except LookupError:
            return _error(404, f"no comparison {cid}")
        except DuplicateJudgement:
            return _error(409, f"{who} already judged comparison {cid}; each evaluator judges a comparison once")
        except InputError as exc:
            return _error(400, str(exc))
        return JSONResponse({"judgement": jid, "comparison": int(cid), "annotator": who, "verdict": body.get("verdict")}, status_code=201)

    @app.get("/api/evaluate/files/{rid}/{name}")
    async def evaluate_file(rid: str, name: str):
        if cfg.evaluate.run is None:
            return _error(404, no_run)
        if not rid.isdigit() or name not in E.FILES:
            return _error(404, "no such file")

        def find() -> Path | None:
            with pref_store() as st:
                rec = st.reconstruction(int(rid))
            return None if rec is None or rec.path is None else cfg.evaluate.run / rec.path / name
        path = await run_in_threadpool(find)
        if path is None or not path.is_file():
            return _error(404, "no such file")
        media = {".png": "image/png", ".glb": "model/gltf-binary"}[path.suffix]
        return FileResponse(path, media_type=media, headers={"Cache-Control": "max-age=3600"})

    @app.get("/evaluate")
    async def evaluate_page():
        return FileResponse(STATIC / "evaluate.html", media_type="text/html")

    @app.get("/api/config")
    async def config():
        lim = cfg.limits
        return {"max_upload_mb": lim.max_upload_mb, "max_duration_s": lim.max_duration_s, "max_photos": lim.max_photos,
                "jobs_per_client": lim.jobs_per_client}

    @app.get("/healthz")
    async def healthz():
        return {"ok": True, **store.counts()}

    @app.get("/favicon.ico")
    async def favicon():
        return Response(status_code=204)

    @app.get("/")
    async def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/jobs/{job_id}")
    async def job_page(job_id: str):
        return FileResponse(STATIC / "job.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("%s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); the server keeps running")

    return app
