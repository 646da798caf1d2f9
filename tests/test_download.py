"""data.source gopro and folder: a real HTTP server on 127.0.0.1, real archives, real files."""

from __future__ import annotations

import hashlib
import io
import shutil
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deblur import config, paths
from deblur.data import download
from deblur.data.manifest import scan
from deblur.errors import DataError

# --------------------------------------------------------------------------- fixtures


class Server:
    """Serves one payload; can drop the first connection after ``cut`` bytes; honours Range."""

    def __init__(self, payload: bytes, cut: int | None = None):
        self.payload, self.cut, self.ranges = payload, cut, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                if self.path != "/GOPRO_Large.zip":
                    self.send_error(404)
                    return
                start = 0
                header = self.headers.get("Range")
                server.ranges.append(header)
                if header:
                    start = int(header.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    total = len(server.payload)
                    self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
                else:
                    self.send_response(200)
                body = server.payload[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut is not None:  # first time only: send a part, then hang up
                    body, server.cut = body[: server.cut], None
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/GOPRO_Large.zip"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(payload: bytes, cut: int | None = None) -> Server:
        servers.append(Server(payload, cut))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def run_download(params: config.Params) -> None:
    """The download stage as cli.py calls it: its own section and the seed."""
    download.run(params.data, params.seed)


def gopro_zip(raw: Path, extra: dict[str, bytes] | None = None) -> bytes:
    """A GOPRO_Large-style zip of a GoPro-layout folder, with blur_gamma as the real one has."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(raw.rglob("*.png")):
            rel = path.relative_to(raw).as_posix()
            zf.write(path, f"GOPRO_Large/{rel}")
            if "/blur/" in rel:
                zf.write(path, f"GOPRO_Large/{rel.replace('/blur/', '/blur_gamma/')}")
        for name, data in (extra or {}).items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def gopro_params(url: str, digest: str) -> config.Params:
    return config.parse(
        {"data": {"source": "gopro", "name": "gopro", "url": url, "sha256": digest}}
    )


def same_tree(a: Path, b: Path) -> bool:
    files = lambda root: {p.relative_to(root): p.read_bytes() for p in root.rglob("*.png")}  # noqa: E731
    return files(a) == files(b)


# --------------------------------------------------------------------------- gopro


def test_download_verify_extract(project, _tiny_raw, serve):
    payload = gopro_zip(_tiny_raw)
    server = serve(payload)
    run_download(gopro_params(server.url, sha(payload)))
    raw = paths.raw_dir("gopro")
    assert same_tree(raw, _tiny_raw)
    assert not list(raw.rglob("blur_gamma"))
    assert (download.DOWNLOADS / "GOPRO_Large.zip").read_bytes() == payload
    assert not list(download.DOWNLOADS.glob("*.part"))
    # A second run finds the verified archive and does not download again.
    run_download(gopro_params(server.url, sha(payload)))
    assert len(server.ranges) == 1


def test_resume_after_the_server_hangs_up(tmp_path, serve):
    payload = bytes(range(256)) * 4000  # ~1 MB
    server = serve(payload, cut=300_000)
    with pytest.raises(DataError, match="run `deblur download` again to resume"):
        download.fetch(server.url, sha(payload), tmp_path, retries=0)
    part = tmp_path / "GOPRO_Large.zip.part"
    assert part.stat().st_size == 300_000

    archive = download.fetch(server.url, sha(payload), tmp_path, retries=0)
    assert archive.read_bytes() == payload
    assert server.ranges == [None, "bytes=300000-"]
    assert not part.exists()


def test_broken_download_resumes_by_itself(tmp_path, serve):
    payload = b"x" * 500_000
    server = serve(payload, cut=123_456)
    assert download.fetch(server.url, sha(payload), tmp_path).read_bytes() == payload
    assert server.ranges == [None, "bytes=123456-"]


def test_wrong_checksum_leaves_nothing(project, _tiny_raw, serve):
    payload = gopro_zip(_tiny_raw)
    server = serve(payload)
    with pytest.raises(DataError, match="SHA-256 is .* expected 0{64}"):
        run_download(gopro_params(server.url, "0" * 64))
    assert not paths.RAW.exists()
    assert not [p for p in download.DOWNLOADS.iterdir() if p.name != ".gitignore"]


def test_unreachable_server_is_one_line(tmp_path):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/GOPRO_Large.zip"
    with pytest.raises(DataError, match=f"cannot reach {url}.*check the network") as err:
        download.fetch(url, "0" * 64, tmp_path)
    assert "\n" not in str(err.value)


def test_http_error_names_the_url(tmp_path, serve):
    server = serve(b"")
    with pytest.raises(DataError, match="HTTP 404"):
        download.fetch(server.url.replace("GOPRO_Large", "nope"), "0" * 64, tmp_path)
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize("evil", ["../evil.png", "/{outside}/evil.png"])
def test_archive_escaping_its_folder_is_refused(project, _tiny_raw, serve, evil):
    outside = project / "outside"
    outside.mkdir()
    name = evil.format(outside=str(outside).lstrip("/"))
    payload = gopro_zip(_tiny_raw, {name: b"gotcha"})
    server = serve(payload)
    with pytest.raises(DataError, match="outside the target folder"):
        run_download(gopro_params(server.url, sha(payload)))
    assert not paths.RAW.exists()
    assert not list(project.rglob("evil.png"))
    assert not list(outside.iterdir())


def test_tar_link_leading_outside_is_refused(tmp_path):
    archive = tmp_path / "GOPRO_Large.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        link = tarfile.TarInfo("GOPRO_Large/train/s/blur/000000.png")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../../../etc/passwd"
        tf.addfile(link)
    with pytest.raises(DataError, match="points outside the archive"):
        download.extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_tar_gz_extracts_like_zip(tmp_path, _tiny_raw):
    archive = tmp_path / "GOPRO_Large.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(_tiny_raw, arcname="GOPRO_Large")
    download.extract(archive, tmp_path / "out")
    assert same_tree(tmp_path / "out", _tiny_raw)


def test_archive_without_the_layout_is_refused(tmp_path):
    archive = tmp_path / "x.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(DataError, match="holds no"):
        download.extract(archive, tmp_path / "out")


# --------------------------------------------------------------------------- folder


def folder_params(folder: Path) -> config.Params:
    return config.parse({"data": {"source": "folder", "name": "local", "folder": str(folder)}})


def test_folder_import(project, _tiny_raw, tmp_path):
    copy = tmp_path / "elsewhere" / "GOPRO_Large"
    shutil.copytree(_tiny_raw, copy)
    run_download(folder_params(copy.parent))  # the wrapping GOPRO_Large/ is found
    assert same_tree(paths.raw_dir("local"), _tiny_raw)


def test_folder_missing_sharp_twin(project, _tiny_raw, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(_tiny_raw, copy)
    victim = sorted(copy.rglob("sharp/*.png"))[0]
    victim.unlink()
    with pytest.raises(DataError, match="has no sharp twin") as err:
        run_download(folder_params(copy))
    assert victim.name in str(err.value)
    assert not paths.RAW.exists()


def test_folder_missing(project):
    with pytest.raises(DataError, match="is not a folder"):
        run_download(folder_params(project / "nope"))


def test_failed_run_keeps_the_previous_dataset(project, _tiny_raw):
    previous = paths.raw_dir("synthetic")
    shutil.copytree(_tiny_raw, previous)
    with pytest.raises(DataError):
        run_download(folder_params(project / "nope"))
    assert same_tree(previous, _tiny_raw)
    assert scan(previous)
