"""The download stage: data/raw/<data.name> in the GoPro layout, from one of three sources.

synthetic renders it offline; gopro fetches GOPRO_Large (resumable, checksummed, extracted
safely); folder imports a local copy. data/raw is replaced whole, atomically: an interrupted
run leaves the previous dataset, or nothing, never something that looks complete.
"""

from __future__ import annotations

import http.client
import posixpath
import re
import shutil
import stat
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO

from tqdm import tqdm

from deblur import fsutil, paths
from deblur.config import DataConfig
from deblur.data.manifest import SIDES, SPLITS, scan, write_origin
from deblur.errors import DataError
from deblur.fsutil import atomic_dir

DOWNLOADS = paths.DATA / "downloads"  # archives, kept across runs: 9 GB is not fetched twice
CHUNK = 1 << 20
TIMEOUT = 60  # seconds without a byte before a connection counts as broken
RETRIES = 3  # automatic resumes of a broken download before giving up


def run(data: DataConfig, seed: int) -> None:
    """The DVC stage: params' data section (and the seed a synthetic render draws with)."""
    with atomic_dir(paths.RAW) as tmp:
        target = tmp / data.name
        if data.source == "synthetic":
            from deblur.data import synthetic  # scipy and skimage: only when rendering

            psnr = synthetic.render(data.synthetic, seed, target)
            print(f"blurry inputs vs sharp: PSNR {_fmt(psnr)} (synthetic, seed {seed})")
        elif data.source == "gopro":
            extract(fetch(data.url, data.sha256), target)
        else:
            import_folder(_outside_raw(Path(data.folder).expanduser(), "data.folder"), target)
        summary = _summary(target)
    print(f"{paths.raw_dir(data.name)}: {summary}")


def _outside_raw(path: Path, what: str) -> Path:
    # data/raw is replaced whole on success: a source inside it would be deleted with it.
    if path.resolve().is_relative_to(paths.RAW.resolve()):
        raise DataError(f"{what} {path} is inside {paths.RAW}, which this stage replaces; move it")
    return path


def _fmt(psnr: dict[str, float]) -> str:
    return ", ".join(f"{split} {value:.2f} dB" for split, value in psnr.items())


def _summary(root: Path) -> str:
    pairs = scan(root)
    counts = ", ".join(f"{sum(p.split == s for p in pairs)} {s} pairs" for s in SPLITS)
    megabytes = sum(f.stat().st_size for f in root.rglob("*.png")) / 1e6
    return f"{counts} ({megabytes:.1f} MB)"


# --------------------------------------------------------------------------- fetch


def fetch(url: str, sha256: str, downloads: Path = DOWNLOADS, retries: int = RETRIES) -> Path:
    """The archive at ``url`` as a local file whose SHA-256 is ``sha256``.

    Bytes land in ``<name>.part`` and an interrupted transfer resumes from where it stopped
    (HTTP Range), now or on the next run. The file gets its final name only once its checksum
    matches; a mismatch deletes it, so a wrong or corrupt archive is never extracted nor kept.
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        local = _outside_raw(Path(urllib.request.url2pathname(parsed.path)), "data.url")
        if not local.is_file():
            raise DataError(f"data.url {url}: no such file; fix the path or download it first")
        _verify(local, sha256, url, delete=False)
        return local

    # The URL names the file; keep only a plain name, so it cannot point anywhere else.
    name = re.sub(r"[^A-Za-z0-9._-]", "_", posixpath.basename(parsed.path)).lstrip(".")
    name = name or "archive"
    final = downloads / name
    if final.is_file() and fsutil.sha256(final) == sha256.lower():
        print(f"{final}: already downloaded, checksum ok")
        return final
    downloads.mkdir(parents=True, exist_ok=True)
    # Downloads are not the pipeline's outputs: keep them out of git without touching its files.
    (downloads / ".gitignore").write_text("*\n")
    part = final.with_name(name + ".part")
    for attempt in range(retries + 1):
        try:
            _transfer(url, part)
            break
        except _Interrupted as exc:
            if attempt == retries:
                raise DataError(
                    f"download of {url} broke off at {exc.have / 1e6:.1f} MB ({exc.reason}); "
                    "run `deblur download` again to resume"
                ) from None
            print(f"connection lost at {exc.have / 1e6:.1f} MB ({exc.reason}); resuming")
    _verify(part, sha256, url, delete=True)
    part.replace(final)
    return final


class _Interrupted(Exception):
    def __init__(self, have: int, reason: str):
        super().__init__(reason)
        self.have, self.reason = have, reason


def _transfer(url: str, part: Path) -> None:
    """Append the rest of ``url`` to ``part``; raise _Interrupted if the stream breaks."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "deblur"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part is already whole
            return
        raise DataError(f"{url} answered HTTP {exc.code} {exc.reason}; check data.url") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(
            f"cannot reach {url} ({reason}); check the network and data.url, "
            "or use data.source: folder with a local copy"
        ) from None
    with response:
        if have and response.status != 206:
            have = 0  # the server ignored Range: start over rather than append a second copy
        size = response.headers.get("Content-Length")
        total = have + int(size) if size is not None else None
        mode = "ab" if have else "wb"
        bar = tqdm(total=total, initial=have, desc="download", unit="B", unit_scale=True)
        with bar, open(part, mode) as out:
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:  # reset, timeout, short read
                raise _Interrupted(out.tell(), type(exc).__name__) from None
            # A server that closes early can look like a clean end of stream: count the bytes.
            if total is not None and out.tell() < total:
                raise _Interrupted(out.tell(), f"{total - out.tell()} bytes missing")


def _verify(path: Path, sha256: str, url: str, delete: bool) -> None:
    got, want = fsutil.sha256(path, progress=True), sha256.lower()
    if got == want:
        return
    fix = "check data.sha256 and data.url"
    if delete:  # a wrong archive is never kept: the next run starts clean
        path.unlink(missing_ok=True)
        fix += " (the download was deleted)"
    raise DataError(f"{url}: SHA-256 is {got}, expected {want}; {fix}")


# --------------------------------------------------------------------------- extract


@dataclass(frozen=True)
class Entry:
    """An archive member, whatever the format: enough to judge it and to read it."""

    name: str
    kind: str  # file | dir | symlink | hardlink | special
    link: str = ""  # symlink target (relative to the entry) or hardlink target (to the root)
    size: int = 0


def extract(archive: Path, target: Path) -> None:
    """Unpack GOPRO_Large's {train,test}/<scene>/{blur,sharp}/*.png into ``target``.

    Every entry is checked before a byte is written: one that is absolute, climbs out with
    `..` or links outside the archive refuses the whole archive. Only the images are written,
    each to a path built from its validated parts, so nothing can land outside ``target``;
    blur_gamma and other extras are skipped.
    """
    with _open_archive(archive) as (entries, read):
        for entry in entries:
            _check(entry, archive)
        wanted = _map_images(entries, archive)
        bar = tqdm(total=sum(e.size for e, _ in wanted), desc="extract", unit="B", unit_scale=True)
        with bar:
            for entry, dest in wanted:
                (target / dest).parent.mkdir(parents=True, exist_ok=True)
                with read(entry) as src, open(target / dest, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
                bar.update(entry.size)


Reader = Callable[[Entry], IO[bytes]]


@contextmanager
def _open_archive(path: Path) -> Iterator[tuple[list[Entry], Reader]]:
    """(entries in archive order, a reader) of a .zip or .tar(.gz/.bz2/.xz)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            yield [_zip_entry(info, zf) for info in zf.infolist()], partial(_read_zip, zf)
    elif tarfile.is_tarfile(path):
        with tarfile.open(path) as tf:
            # extractfile follows links inside the archive; reading in archive order keeps a
            # .tar.gz streaming forward instead of decompressing from the start for each file.
            yield [_tar_entry(m) for m in tf.getmembers()], lambda e: tf.extractfile(e.name)
    else:
        raise DataError(f"{path} is neither a zip nor a tar archive; check data.url")


def _read_zip(zf: zipfile.ZipFile, entry: Entry) -> IO[bytes]:
    name = entry.name
    if entry.kind == "symlink":  # zipfile stores a link's target as its content: follow it
        name = posixpath.normpath(posixpath.join(posixpath.dirname(name), entry.link))
    return zf.open(name)


def _zip_entry(info: zipfile.ZipInfo, zf: zipfile.ZipFile) -> Entry:
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return Entry(info.filename, "symlink", zf.read(info).decode("utf-8", "replace"))
    return Entry(info.filename, "dir" if info.is_dir() else "file", size=info.file_size)


def _tar_entry(member: tarfile.TarInfo) -> Entry:
    if member.issym():
        return Entry(member.name, "symlink", member.linkname)
    if member.islnk():
        return Entry(member.name, "hardlink", member.linkname)
    kind = "dir" if member.isdir() else "file" if member.isfile() else "special"
    return Entry(member.name, kind, size=member.size)


def _escapes(name: str) -> bool:
    """True if an archive path is absolute or climbs above the archive's root."""
    name = name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return True
    return posixpath.normpath(name).split("/")[0] == ".."


def _check(entry: Entry, archive: Path) -> None:
    if _escapes(entry.name):
        raise DataError(
            f"{archive}: entry '{entry.name}' would be written outside the target folder; "
            "refusing this archive (is data.url the real GOPRO_Large?)"
        )
    if entry.kind == "special":
        raise DataError(
            f"{archive}: entry '{entry.name}' is a device or fifo; refusing the archive"
        )
    if entry.kind in ("symlink", "hardlink"):
        # Symlinks resolve from their own folder; tar hardlinks name a member from the root.
        base = posixpath.dirname(entry.name) if entry.kind == "symlink" else ""
        if entry.link.startswith("/") or _escapes(posixpath.join(base, entry.link)):
            raise DataError(
                f"{archive}: link '{entry.name}' -> '{entry.link}' points outside the archive; "
                "refusing this archive"
            )


def _map_images(entries: list[Entry], archive: Path) -> list[tuple[Entry, Path]]:
    """(entry, relative destination) of every GoPro image, whatever folder wraps the layout."""
    wanted: dict[Path, Entry] = {}
    for entry in entries:
        if entry.kind == "dir":
            continue
        parts = posixpath.normpath(entry.name.replace("\\", "/")).split("/")
        if len(parts) < 4 or any(p.startswith(("__MACOSX", "._")) for p in parts):
            continue  # too shallow to be an image of the layout, or macOS metadata
        split, scene, side, file = parts[-4:]
        if split not in SPLITS or side not in SIDES or not file.lower().endswith(".png"):
            continue
        dest = Path(split, scene, side, file)
        if dest in wanted:
            raise DataError(
                f"{archive}: both '{wanted[dest].name}' and '{entry.name}' map to {dest}; "
                "the archive holds two copies of the layout"
            )
        wanted[dest] = entry
    if not wanted:
        raise DataError(
            f"{archive} holds no {{train,test}}/<scene>/{{blur,sharp}}/*.png; "
            "is data.url the GOPRO_Large archive?"
        )
    return [(entry, dest) for dest, entry in wanted.items()]


# --------------------------------------------------------------------------- folder


def import_folder(source: Path, target: Path) -> None:
    """Copy a local GoPro-layout dataset into ``target`` after checking every pair is whole."""
    if not source.is_dir():
        raise DataError(
            f"data.folder {source} is not a folder; point it at a copy in the GoPro layout "
            "({train,test}/<scene>/{blur,sharp}/*.png)"
        )
    root = _layout_root(source)
    pairs = scan(root)
    for pair in pairs:
        if pair.blur is None or pair.sharp is None:
            have, missing = (pair.blur, "sharp") if pair.sharp is None else (pair.sharp, "blur")
            raise DataError(f"{have} has no {missing} twin; add it or remove the file")
    for split in SPLITS:
        if not any(p.split == split for p in pairs):
            raise DataError(f"data.folder {root} has no {split}/<scene>/blur/*.png pairs")
    for pair in tqdm(pairs, desc="import", unit="pair"):
        for side, path in (("blur", pair.blur), ("sharp", pair.sharp)):
            dest = target / pair.split / pair.scene / side / path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
    write_origin(target, root)


def _layout_root(folder: Path) -> Path:
    """``folder`` itself, or its one subfolder (GOPRO_Large/) that holds train/ and test/."""
    if any((folder / split).is_dir() for split in SPLITS):
        return folder
    subs = [d for d in folder.iterdir() if d.is_dir() and any((d / s).is_dir() for s in SPLITS)]
    if len(subs) == 1:
        return subs[0]
    raise DataError(
        f"data.folder {folder} holds no train/ or test/ folder; "
        "point it at a copy in the GoPro layout ({train,test}/<scene>/{blur,sharp}/*.png)"
    )
