"""Checking an upload before it is queued: what it is by its bytes (never its name), and whether its header is
within the limits — before anything is decoded in full (the job decodes only the frames it keeps).

Every refusal is an ``InputError`` whose message is shown on the page as is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

from vibe3r.errors import InputError
from vibe3r.serve.config import Limits

CHUNK = 1 << 20


class TooLarge(InputError):
    """The upload exceeds the size limit (HTTP 413)."""


def sniff(head: bytes) -> str | None:
    """File type from its first bytes: a video container (``mp4``, ``mov``, ``webm``, ``mkv``, ``avi``) or a photo
    (``jpg``, ``png``, ``webp``, ``heic``), else None. The extension the server stores it under comes from here."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"hevc"):
            return "heic"
        return "mov" if brand == b"qt  " else "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm" if b"webm" in head[:64] else "mkv"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:3] == b"\xff\xd8\xff":
        return "jpg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    return None


VIDEO_TYPES = ("mp4", "mov", "webm", "mkv", "avi")
PHOTO_TYPES = ("jpg", "png", "webp")


def save_stream(src: BinaryIO, dest_dir: Path, stem: str, budget: int) -> tuple[Path, str, int]:
    """Copy an upload to ``dest_dir/<stem>.<sniffed type>`` in chunks, refusing past ``budget`` bytes.

    Returns (path, type, bytes). The name is ours; only the content decides the extension.
    """
    head = src.read(64)
    kind = sniff(head)
    if not head:
        raise InputError("the uploaded file is empty")
    if kind is None:
        raise InputError("not a video or photo: the file is none of mp4, mov, webm, mkv, avi, jpeg, png, webp "
                         "(judged by its content, not its name)")
    if kind == "heic":
        raise InputError("HEIC photos are not supported; export them as JPEG (or upload the video)")
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / f"{stem}.{kind}"
    n = len(head)
    with open(path, "wb") as f:
        f.write(head)
        while chunk := src.read(CHUNK):
            n += len(chunk)
            if n > budget:
                f.close()
                path.unlink(missing_ok=True)
                raise TooLarge(f"the upload is larger than the limit of {budget / 2**20:.0f} MB")
            f.write(chunk)
    return path, kind, n


def check_video(path: Path, limits: Limits) -> dict[str, Any]:
    """Container header (codec, size, duration, frame count) against the limits, then decode the first two frames."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        raise InputError("the video is corrupt or truncated: its container cannot be read") from None
    try:
        if not container.streams.video:
            raise InputError("the file has no video track")
        st = container.streams.video[0]
        ctx = st.codec_context
        codec = getattr(ctx, "name", None) if ctx is not None else None
        if not codec or not _has_decoder(codec):
            tag = getattr(st, "codec_tag", None) or codec or "unknown"
            raise InputError(f"unsupported video codec '{tag}'; phones record H.264, HEVC, VP9 or AV1, which work")
        w, h = int(ctx.width or 0), int(ctx.height or 0)
        if w * h > limits.max_pixels:
            raise InputError(f"the video is too large: {w}x{h} pixels per frame, the limit is {limits.max_pixels / 1e6:.1f} megapixels")
        duration = None
        if st.duration is not None and st.time_base is not None:
            duration = float(st.duration * st.time_base)
        elif container.duration is not None:
            duration = container.duration / 1e6
        if duration is not None and duration > limits.max_duration_s:
            raise InputError(f"the video is too long: {duration:.0f} s, the limit is {limits.max_duration_s:.0f} s")
        n_header = int(st.frames or 0)
        if 0 < n_header < limits.min_frames:
            raise InputError(f"the video has only {n_header} frame{'s' if n_header != 1 else ''}; a reconstruction needs a moving "
                             f"camera over at least {limits.min_frames} frames")
        decoded, rotation = 0, 0
        try:
            for frame in container.decode(st):
                if decoded == 0:  # display rotation (a phone in portrait): the frames are shown, and reconstructed, upright
                    rotation = int(round(int(getattr(frame, "rotation", 0) or 0) / 90.0)) * 90
                decoded += 1
                if decoded >= limits.min_frames:
                    break
        except (av.error.FFmpegError, ValueError):
            raise InputError("the video is corrupt: its frames do not decode") from None
        if decoded == 0:
            raise InputError("the video has no frames that decode (corrupt or empty)")
        if decoded < limits.min_frames:
            raise InputError(f"the video has only {decoded} frame{'s' if decoded != 1 else ''}; a reconstruction needs a moving "
                             f"camera over at least {limits.min_frames} frames")
        rate = st.average_rate or st.guessed_rate
        if rotation % 180:
            w, h = h, w
        return {"codec": codec, "width": w, "height": h, "rotation": rotation, "duration_s": duration,
                "frames_in_header": n_header or None, "fps": float(rate) if rate else None}
    finally:
        container.close()


def _has_decoder(name: str) -> bool:
    import av

    try:
        av.codec.Codec(name, "r")
        return True
    except (av.error.FFmpegError, ValueError, KeyError):
        return False


EXIF_ORIENTATION = 0x0112


def check_photo(path: Path, limits: Limits) -> tuple[int, int]:
    """A photo's size from its header, then a full verify of the file; (width, height) as displayed.

    A phone photo taken upright is often stored sideways with an EXIF orientation tag: such a file is
    rewritten upright (same format), as players show it and as the reconstruction must see it.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > limits.max_pixels:
                raise InputError(f"a photo is too large: {w}x{h} pixels, the limit is {limits.max_pixels / 1e6:.1f} megapixels")
            im.verify()  # must come right after open (PNG)
        with Image.open(path) as im:
            if im.getexif().get(EXIF_ORIENTATION, 1) not in (1, None):
                fmt = im.format
                up = ImageOps.exif_transpose(im)
                up.save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
                w, h = up.size
    except InputError:
        raise
    except Exception:
        raise InputError("a photo is corrupt: it does not decode") from None
    return w, h
