"""Uploads: streamed to a file with the byte cap enforced while reading, checked from the
header, decoded only when their turn comes.

Starlette's own form parsing reads the whole body before a handler runs; this parser is
fed the body chunk by chunk instead (uvicorn stops reading the socket while a chunk waits),
so an oversized upload is refused after at most ``max_bytes`` plus one chunk, and the
connection is closed rather than drained. Nothing here holds an upload in memory.
"""

from __future__ import annotations

import asyncio
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from python_multipart.multipart import MultipartParser, parse_options_header

from deblur.data.images import read_rgb
from deblur.data.photo import MAX_PIXELS
from deblur.errors import DeblurError

MAX_BYTES = 20 * 1024 * 1024
# Room for the multipart boundaries, part headers and the small text fields.
FORM_SLACK = 64 * 1024
MAX_FIELD = 256
# PIL's format name -> the file suffix the decoder is given (PIL sniffs the content anyway).
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}
ACCEPTED = "PNG, JPEG, WebP, BMP or TIFF"
HOW = "send the photo as multipart/form-data field `file` (curl -F file=@photo.jpg)"


class UploadError(Exception):
    """A request the user can fix: its HTTP status and a one-line message for the page.

    ``close`` ends the connection after the answer: the rest of the body is never read.
    """

    def __init__(self, status: int, message: str, headers: dict | None = None, close=False):
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})
        if close:
            self.headers["Connection"] = "close"


def megabytes(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


@dataclass
class Tally:
    """Bytes of the latest upload read from the socket and written to disk (for /health)."""

    read: int = 0
    written: int = 0


@dataclass
class Form:
    """A parsed upload: the file part on disk, and the text fields."""

    name: str = ""
    path: Path | None = None
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)


class _Parser:
    """python-multipart callbacks: text fields into memory, the one file part into ``path``."""

    def __init__(self, path: Path, max_bytes: int, declared: int):
        self.form = Form()
        self.path, self.max_bytes, self.declared = path, max_bytes, declared
        self.header, self.headers, self.value = b"", {}, b""
        self.part_name, self.sink = "", None
        self.error: UploadError | None = None

    def on_part_begin(self):
        self.headers, self.part_name, self.value = {}, "", b""

    def on_header_field(self, data, start, end):
        self.header += data[start:end]

    def on_header_value(self, data, start, end):
        self.value += data[start:end]

    def on_header_end(self):
        self.headers[self.header.lower()] = self.value
        self.header, self.value = b"", b""

    def on_headers_finished(self):
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.part_name = options.get(b"name", b"").decode("latin-1")
        filename = options.get(b"filename")
        if filename is None:
            return
        if self.part_name != "file" or self.sink is not None:
            raise UploadError(400, f"one file, in field `file`, please; {HOW}", close=True)
        self.form.name = Path(filename.decode("utf-8", "replace")).name or "upload"
        # The declared size names how large it is; the running count below catches a
        # missing or lying Content-Length.
        if self.declared > self.max_bytes + FORM_SLACK:
            raise UploadError(
                413,
                f"{self.form.name} is {megabytes(self.declared)}; "
                f"the upload limit is {megabytes(self.max_bytes)}",
                close=True,
            )
        self.form.path = self.path
        self.sink = self.path.open("wb")

    def on_part_data(self, data, start, end):
        chunk = data[start:end]
        if self.sink is not None and self.form.path is not None and self.part_name == "file":
            self.form.size += len(chunk)
            if self.form.size > self.max_bytes:
                raise UploadError(
                    413,
                    f"{self.form.name} is larger than the {megabytes(self.max_bytes)} upload limit",
                    close=True,
                )
            self.sink.write(chunk)
            return
        self.value += chunk
        if len(self.value) > MAX_FIELD:
            raise UploadError(400, f"form field `{self.part_name}` is too long", close=True)

    def on_part_end(self):
        if self.sink is not None and self.part_name == "file":
            self.sink.close()
        elif self.part_name:
            self.form.fields[self.part_name] = self.value.decode("utf-8", "replace")
        self.value = b""

    def close(self):
        if self.sink is not None and not self.sink.closed:
            self.sink.close()


# How long a body may take when nobody says (serve.body_timeout_s sets it for the server).
BODY_TIMEOUT_S = 60.0


def _late(name: str, timeout_s: float) -> UploadError:
    return UploadError(
        408,
        f"{name} did not arrive within {timeout_s:g} s (serve.body_timeout_s); "
        "try again on a faster connection, or send a smaller file",
        close=True,
    )


async def receive(
    request,
    path: Path,
    tally: Tally,
    max_bytes: int = MAX_BYTES,
    timeout_s: float = BODY_TIMEOUT_S,
) -> Form:
    """Stream a multipart request's body; its file part goes to ``path``.

    Raises UploadError (413 over the cap, 400/415/422 for a malformed form, 408 when the
    body takes longer than ``timeout_s``) before reading any more of the body than the
    cap allows.
    """
    ctype, options = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not options.get(b"boundary"):
        raise UploadError(415, f"expected a multipart/form-data upload; {HOW}", close=True)
    declared = int(request.headers.get("content-length") or 0)
    handler = _Parser(path, max_bytes, declared)
    callbacks = {
        name: getattr(handler, name)
        for name in (
            "on_part_begin",
            "on_part_data",
            "on_part_end",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
        )
    }
    parser = MultipartParser(options[b"boundary"], callbacks)
    tally.read = tally.written = 0
    try:
        async with asyncio.timeout(timeout_s):
            await _feed(request, parser, handler, tally)
        parser.finalize()
    except TimeoutError:
        handler.close()
        path.unlink(missing_ok=True)
        raise _late(handler.form.name or "the upload", timeout_s) from None
    except UploadError:
        handler.close()
        path.unlink(missing_ok=True)
        raise
    except Exception as exc:  # python-multipart's parse errors: a malformed body
        handler.close()
        path.unlink(missing_ok=True)
        raise UploadError(400, f"malformed multipart body ({exc}); {HOW}", close=True) from None
    handler.close()
    if handler.form.path is None:
        raise UploadError(422, f"no file in the form; {HOW}")
    return handler.form


async def _feed(request, parser, handler: _Parser, tally: Tally) -> None:
    """The body, chunk by chunk, into the parser, refusing it once past the cap."""
    read, limit = 0, handler.max_bytes + FORM_SLACK
    async for chunk in request.stream():
        read += len(chunk)  # this request's own count: uploads run side by side
        tally.read = read
        if read > limit:
            name = handler.form.name or "the upload"
            raise UploadError(
                413,
                f"{name} is larger than the {megabytes(handler.max_bytes)} upload limit",
                close=True,
            )
        parser.write(chunk)
        tally.written = handler.form.size


async def discard(request, max_bytes: int = MAX_BYTES, timeout_s: float = BODY_TIMEOUT_S) -> bool:
    """Read and drop a body that will be refused anyway (a full queue), so the client reads
    the answer instead of a reset connection; False if it ran past the cap or the deadline
    (then close)."""
    seen = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                seen += len(chunk)
                if seen > max_bytes + FORM_SLACK:
                    return False
    except TimeoutError:
        return False
    return True


# --------------------------------------------------------------------------- checks


def check_header(path: Path, name: str, max_pixels: int = MAX_PIXELS) -> tuple[str, int, int]:
    """Type and pixel count of an upload from its header only -> (suffix, width, height).

    PIL refuses a header declaring more than ~179 MP outright (DecompressionBombError) and
    warns from ~89 MP; both are a 413 here, as is anything over ``max_pixels``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:  # reads the header, decodes nothing
                kind, (w, h) = img.format, img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f" ({int(found[1]) / 1e6:.0f} MP)" if found else ""
        raise UploadError(
            413,
            f"{name} declares an image too large to decode{size}; "
            f"the limit is {max_pixels / 1e6:.0f} MP",
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise UploadError(415, f"{name} is not an image; upload a {ACCEPTED} file") from None
    if kind not in FORMATS:
        raise UploadError(415, f"{name} is a {kind} file; upload a {ACCEPTED} file")
    if w * h > max_pixels:
        raise UploadError(
            413,
            f"{name} is {w}x{h} ({w * h / 1e6:.1f} MP); the limit is {max_pixels / 1e6:.0f} MP, "
            "downscale it first",
        )
    return FORMATS[kind], w, h


def decode(path: Path, name: str) -> np.ndarray:
    """The upload as uint8 HxWx3 RGB, upright, through the project's one image reader."""
    try:
        return read_rgb(path)
    except DeblurError as exc:  # its message names the temporary file: name the upload
        message = str(exc).replace(str(path), name).split("; ")[0]
        raise UploadError(422, f"{message}; the file looks damaged") from None


def result_name(name: str) -> str:
    """photo.jpg -> photo-deblurred.png, ASCII only (it travels in an HTTP header)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem).strip("._") or "image"
    return f"{stem[:80]}-deblurred.png"
