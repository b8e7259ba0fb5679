"""Downloads and the weight cache, against a real HTTP server on 127.0.0.1.

The server is http.server in a background thread on an ephemeral port; every request it
sees is logged so tests can tell whether the cache was used or the network was hit.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from clipdraw.errors import ClipdrawError
from clipdraw.weights import (
    DownloadError,
    WeightFile,
    clip_weight_file,
    download,
    dvae_weight_file,
    fetch,
)

PAYLOAD = b"clipdraw test weights\n" * 200  # a few KiB, not a multiple of anything special
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
OLD_BYTES = b"previous good contents"


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes[path] = (status, body, declared_length)`` and logs each path."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.server.requests.append(self.path)
        status, body, declared = self.server.routes.get(self.path, (404, b"not found\n", None))
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body) if declared is None else declared))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True  # a short body then EOF: the client sees the cut

    def log_message(self, *args):  # keep test output quiet
        pass


class LocalServer:
    """What the tests see of the server: its base URL, routes to fill, and the request log."""

    def __init__(self, httpd):
        self.httpd = httpd
        host, port = httpd.server_address[:2]
        self.base = f"http://{host}:{port}"

    @property
    def requests(self) -> list:
        return self.httpd.requests

    def serve(self, path: str, body: bytes = PAYLOAD, status: int = 200, declared: int | None = None) -> str:
        self.httpd.routes[path] = (status, body, declared)
        return self.base + path


@pytest.fixture
def server(monkeypatch):
    """A bounded local server; proxies are switched off so urllib talks to it directly."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.routes, httpd.requests = {}, []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield LocalServer(httpd)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def cache(tmp_path, monkeypatch, server):
    """CLIPDRAW_CACHE in tmp_path and CLIPDRAW_MIRROR at the local server."""
    root = tmp_path / "cache"
    monkeypatch.setenv("CLIPDRAW_CACHE", str(root))
    monkeypatch.setenv("CLIPDRAW_MIRROR", server.base + "/mirror/")  # trailing slash must be tolerated
    return root


def _leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.glob(".*.part"))


# --------------------------------------------------------------------------- download()


def test_download_success_writes_file_and_returns_hash(server, tmp_path):
    """The whole body lands at dest, the returned hash is the body's, and no temp file stays."""
    url = server.serve("/w.bin")
    dest = tmp_path / "sub" / "w.bin"  # parent folder is created on demand
    digest = download(url, dest, sha256=PAYLOAD_SHA.upper(), timeout=5)
    assert dest.read_bytes() == PAYLOAD
    assert digest == PAYLOAD_SHA
    assert _leftovers(dest.parent) == []
    assert sorted(p.name for p in dest.parent.iterdir()) == ["w.bin"]
    assert server.requests == ["/w.bin"]


def test_download_shows_progress_on_stderr(server, tmp_path, capsys):
    """tqdm writes to sys.stderr: the bar's label and the byte unit must show up there."""
    url = server.serve("/w.bin")
    download(url, tmp_path / "w.bin", desc="my-weights", timeout=5)
    out, err = capsys.readouterr()
    assert "my-weights" in err
    assert "B" in err.split("my-weights", 1)[1]  # unit="B" follows the label
    assert "my-weights" not in out


def test_download_progress_label_defaults_to_file_name(server, tmp_path, capsys):
    """Without desc the bar is labelled with the destination's name."""
    url = server.serve("/w.bin")
    download(url, tmp_path / "named-file.bin", timeout=5)
    assert "named-file.bin" in capsys.readouterr().err


def test_download_checksum_mismatch_leaves_nothing(server, tmp_path):
    """A wrong hash is refused after the transfer, and neither dest nor a temp file remains."""
    url = server.serve("/w.bin")
    dest = tmp_path / "w.bin"
    with pytest.raises(DownloadError) as info:
        download(url, dest, sha256="0" * 64, timeout=5)
    assert isinstance(info.value, ClipdrawError)
    assert "checksum mismatch" in str(info.value)
    assert PAYLOAD_SHA in str(info.value)  # tells what was actually received
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_download_interrupted_transfer(server, tmp_path):
    """Content-Length promises more than is sent before the connection closes: refused."""
    url = server.serve("/cut.bin", body=PAYLOAD, declared=len(PAYLOAD) + 5000)
    dest = tmp_path / "cut.bin"
    with pytest.raises(DownloadError) as info:
        download(url, dest, timeout=5)
    message = str(info.value)
    assert "interrupted" in message or "transfer failed" in message
    if "interrupted" in message:
        assert f"{len(PAYLOAD)} of {len(PAYLOAD) + 5000} bytes" in message
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("status", [404, 500])
def test_download_http_error_names_status(server, tmp_path, status):
    """HTTP errors carry their status code in the message and write nothing."""
    url = server.serve("/err.bin", body=b"server says no", status=status)
    dest = tmp_path / "err.bin"
    with pytest.raises(DownloadError, match=rf"\bHTTP {status}\b"):
        download(url, dest, timeout=5)
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []
    assert server.requests == ["/err.bin"]


@pytest.mark.parametrize("failure", ["checksum", "interrupted", "404", "500"])
def test_failed_download_keeps_existing_dest(server, tmp_path, failure):
    """Dest is replaced only by a complete, verified file: old bytes survive any failure."""
    dest = tmp_path / "w.bin"
    dest.write_bytes(OLD_BYTES)
    kwargs = {}
    if failure == "checksum":
        url = server.serve("/w.bin")
        kwargs["sha256"] = "f" * 64
    elif failure == "interrupted":
        url = server.serve("/w.bin", declared=len(PAYLOAD) * 3)
    else:
        url = server.serve("/w.bin", status=int(failure))
    with pytest.raises(DownloadError):
        download(url, dest, timeout=5, **kwargs)
    assert dest.read_bytes() == OLD_BYTES
    assert _leftovers(tmp_path) == []


# --------------------------------------------------------------------------- fetch(): dVAE


def test_fetch_dvae_via_mirror_caches_and_verifies(server, cache, capsys):
    """Full life of a dVAE file: download + hash record, cache hit, damage, re-download."""
    weight = dvae_weight_file("openai")
    route = f"/mirror/{weight.filename}"
    server.serve(route)
    assert weight.source_url == server.base + route

    path = fetch(weight)
    assert path == cache / weight.filename
    assert path.read_bytes() == PAYLOAD
    record = path.with_name(path.name + ".sha256")
    assert record.read_text().strip() == PAYLOAD_SHA
    assert server.requests == [route]
    assert _leftovers(cache) == []

    # A good cached file is used as is, online or offline: the server is not asked again.
    assert fetch(weight) == path
    assert fetch(weight, offline=True) == path
    assert server.requests == [route]

    # Same size, one byte flipped: only the recorded hash can tell.
    damaged = bytearray(PAYLOAD)
    damaged[10] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(ClipdrawError, match="damaged") as info:
        fetch(weight, offline=True)
    assert str(path) in str(info.value)
    assert server.requests == [route]
    assert path.read_bytes() == bytes(damaged)  # offline refuses; it does not delete

    capsys.readouterr()
    assert fetch(weight) == path
    assert server.requests == [route, route]
    assert path.read_bytes() == PAYLOAD
    assert record.read_text().strip() == PAYLOAD_SHA
    assert "damaged" in capsys.readouterr().err
    assert fetch(weight, offline=True) == path  # good again, and trusted offline
    assert len(server.requests) == 2


def test_fetch_offline_without_cache_names_url_and_path(server, cache):
    """Offline with an empty cache: the message says what to download and where to put it."""
    weight = dvae_weight_file("openai")
    with pytest.raises(ClipdrawError) as info:
        fetch(weight, offline=True)
    message = str(info.value)
    assert weight.source_url in message
    assert f"{server.base}/mirror/{weight.filename}" in message
    assert str(cache / weight.filename) in message
    assert server.requests == []
    assert not (cache / weight.filename).exists()


def test_fetch_failure_names_url_and_place(server, cache):
    """A 404 from the mirror: the message names the URL, the status and the exact path."""
    weight = dvae_weight_file("openai-encoder")
    url = f"{server.base}/mirror/{weight.filename}"  # nothing served there: 404
    dest = cache / weight.filename
    with pytest.raises(ClipdrawError) as info:
        fetch(weight)
    message = str(info.value)
    assert url in message
    assert "404" in message
    assert f"place it at {dest}" in message
    assert server.requests == [f"/mirror/{weight.filename}"]
    assert not dest.exists()
    assert not dest.with_name(dest.name + ".sha256").exists()
    assert _leftovers(cache) == []


def test_fetch_explicit_root_overrides_cache(server, cache, tmp_path):
    """fetch(root=...) puts the file there, not in CLIPDRAW_CACHE."""
    weight = dvae_weight_file("openai")
    server.serve(f"/mirror/{weight.filename}")
    root = tmp_path / "elsewhere"
    assert fetch(weight, root=root) == root / weight.filename
    assert (root / weight.filename).read_bytes() == PAYLOAD
    assert not (cache / weight.filename).exists()


# --------------------------------------------------------------------------- fetch(): CLIP


def _clip_weight(sha256: str) -> WeightFile:
    return WeightFile(name="clip-test", url=f"https://example.invalid/models/{sha256}/test.pt",
                      filename="clip-test.pt", sha256=sha256)


def test_clip_weight_file_takes_hash_from_url():
    """The published CLIP URLs carry their SHA-256 as the second-to-last path segment."""
    weight = clip_weight_file("ViT-B/32")
    assert weight.sha256 == weight.url.split("/")[-2]
    assert len(weight.sha256) == 64 and int(weight.sha256, 16) >= 0
    assert weight.filename == "clip-ViT-B-32.pt"
    with pytest.raises(ClipdrawError, match="unknown CLIP model"):
        clip_weight_file("no-such-model")


def test_fetch_clip_refuses_wrong_hash(server, cache):
    """Served bytes that do not match the known hash are never put in the cache."""
    server.serve("/mirror/clip-test.pt")
    weight = _clip_weight("a" * 64)
    dest = cache / "clip-test.pt"
    with pytest.raises(ClipdrawError, match="checksum mismatch") as info:
        fetch(weight)
    assert str(dest) in str(info.value)
    assert not dest.exists()
    assert _leftovers(cache) == []


def test_fetch_clip_accepts_right_hash(server, cache):
    """The right hash is accepted, no hash record is needed, and the cache is then trusted."""
    server.serve("/mirror/clip-test.pt")
    weight = _clip_weight(PAYLOAD_SHA)
    path = fetch(weight)
    assert path == cache / "clip-test.pt"
    assert path.read_bytes() == PAYLOAD
    assert not path.with_name(path.name + ".sha256").exists()
    assert fetch(weight, offline=True) == path
    assert len(server.requests) == 1

    path.write_bytes(PAYLOAD + b"extra")  # damaged: the known hash catches it
    with pytest.raises(ClipdrawError, match="damaged"):
        fetch(weight, offline=True)
    assert fetch(weight) == path
    assert path.read_bytes() == PAYLOAD
    assert len(server.requests) == 2


def test_fetch_clip_uppercase_hash_is_trusted_once_cached(server, cache):
    """A hash given in upper case passes download(); the cached file must then verify too."""
    server.serve("/mirror/clip-test.pt")
    weight = _clip_weight(PAYLOAD_SHA.upper())
    path = fetch(weight)
    assert path.read_bytes() == PAYLOAD
    assert fetch(weight, offline=True) == path


def test_fetch_mirror_without_scheme_is_a_clean_error(cache, monkeypatch):
    """A mistyped CLIPDRAW_MIRROR (no http://) must give a one-line ClipdrawError, not a traceback."""
    monkeypatch.setenv("CLIPDRAW_MIRROR", "mirror.example")
    weight = dvae_weight_file("openai")
    with pytest.raises(ClipdrawError, match="mirror.example"):
        fetch(weight)
    assert _leftovers(cache) == []


def test_download_url_without_scheme_closes_its_file(tmp_path, monkeypatch):
    """A URL with no scheme fails before the transfer starts: the temporary file's handle is
    closed all the same (no ResourceWarning, no open descriptor), and nothing is left behind."""
    import clipdraw.weights as weights

    opened = []

    def recording_open(*args, **kwargs):
        opened.append(open(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(weights, "open", recording_open, raising=False)   # found before the builtin
    with pytest.raises(DownloadError, match="bad URL"):
        download("example.com/w.bin", tmp_path / "w.bin", timeout=5)
    assert len(opened) == 1 and opened[0].closed
    assert list(tmp_path.iterdir()) == []
