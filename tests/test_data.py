"""lmcore.data against a real HTTP server on 127.0.0.1."""

import hashlib
import http.server
import socket
import threading
from dataclasses import replace

import pytest

from lmcore import data
from lmcore.data import DataError, DataFile, fetch

PAYLOAD = bytes(range(256)) * 64  # 16 KiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at /good (honouring Range), altered bytes at /corrupt, 404 elsewhere."""

    ranges: list = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path not in ("/good", "/corrupt"):
            self.send_error(404)
            return
        body = PAYLOAD if self.path == "/good" else b"\xff" + PAYLOAD[1:]
        header = self.headers.get("Range")
        _Handler.ranges.append(header)
        status = 200
        if header:
            first, last = (int(x) for x in header.removeprefix("bytes=").split("-"))
            body, status = body[first : last + 1], 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_good_download_is_checked_and_cached(server, tmp_path):
    entry = DataFile("t", "t.bin", f"{server}/good", size=len(PAYLOAD), sha256=SHA)
    path = fetch(entry, directory=tmp_path)
    assert path == tmp_path / "t.bin" and path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.bin"]  # no temporary left behind
    # second call does not download again: the server would now fail it
    assert fetch(replace(entry, url=f"{server}/missing"), directory=tmp_path) == path


def test_corrupt_download_is_refused_and_leaves_nothing(server, tmp_path):
    entry = DataFile("t", "t.bin", f"{server}/corrupt", size=len(PAYLOAD), sha256=SHA)
    with pytest.raises(DataError, match=r"t: download .* failed its check \(sha256"):
        fetch(entry, directory=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_byte_range_request(server, tmp_path):
    part = PAYLOAD[100:1100]
    entry = DataFile("r", "r.bin", f"{server}/good", size=1000, sha256=hashlib.sha256(part).hexdigest(), byte_range=(100, 1099))
    _Handler.ranges.clear()
    assert fetch(entry, directory=tmp_path).read_bytes() == part
    assert _Handler.ranges == ["bytes=100-1099"]


def test_offline_message_names_file_and_remedy(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    entry = DataFile("gone", "gone.txt", f"http://127.0.0.1:{port}/x", size=3)
    with pytest.raises(DataError, match=r"gone: could not download .*LMCORE_CACHE_DIR"):
        fetch(entry, directory=tmp_path, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_unknown_name_lists_known_names():
    with pytest.raises(DataError, match=r"unknown data file 'nope'.*tinystories-sample"):
        fetch("nope")


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LMCORE_CACHE_DIR", str(tmp_path))
    assert data.cache_dir() == tmp_path
    monkeypatch.delenv("LMCORE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert data.cache_dir() == tmp_path / "x" / "lmcore"


def test_cached_file_of_wrong_size_is_refused(tmp_path):
    (tmp_path / "t.bin").write_bytes(b"short")
    entry = DataFile("t", "t.bin", "http://127.0.0.1:9/x", size=len(PAYLOAD))
    with pytest.raises(DataError, match="delete it"):
        fetch(entry, directory=tmp_path)


def test_registry_matches_shared_copies():
    """Every registered file present in the cache (CI: ../shared/data) has the registered checksum."""
    checked = 0
    for entry in data.REGISTRY.values():
        path = data.cache_dir() / entry.filename
        if path.exists() and entry.sha256:
            assert data.sha256_of(path) == entry.sha256, entry.name
            checked += 1
    if checked == 0:
        pytest.skip(f"no registered file in {data.cache_dir()}")
