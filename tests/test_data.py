"""lmcore.data against a real HTTP server on 127.0.0.1."""

import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
from dataclasses import replace

import pytest

from lmcore import data
from lmcore.data import DataError, DataFile, fetch

PAYLOAD = bytes(range(256)) * 64  # 16 KiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at /good (honouring Range), altered bytes at /corrupt, a transfer that
    announces 1,048,576 bytes and stops after 349,525 at /cut, PAYLOAD without honouring Range
    at /norange, and 404 elsewhere."""

    ranges: list = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path == "/cut":
            self.send_response(200)
            self.send_header("Content-Length", "1048576")
            self.end_headers()
            self.wfile.write(b"x" * 349_525)
            self.close_connection = True
            return
        if self.path not in ("/good", "/corrupt", "/norange"):
            self.send_error(404)
            return
        body = PAYLOAD if self.path != "/corrupt" else b"\xff" + PAYLOAD[1:]
        header = self.headers.get("Range")
        _Handler.ranges.append(header)
        status, span = 200, None
        if header and self.path != "/norange":
            first, last = (int(x) for x in header.removeprefix("bytes=").split("-"))
            body, status, span = body[first : last + 1], 206, f"bytes {first}-{last}/{len(PAYLOAD)}"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if span:
            self.send_header("Content-Range", span)
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
    with pytest.raises(DataError, match=r"gone: could not download .*LMCORE_CACHE_DIR") as err:
        fetch(entry, directory=tmp_path, timeout=5)
    assert f"copy gone.txt into {tmp_path} by hand" in str(err.value)  # the folder fetch was given, not the default
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
    """Every registered file present in the cache (CI: ../shared/data) has a registered size and checksum."""
    checked = 0
    for entry in data.REGISTRY.values():
        path = data.cache_dir() / entry.filename
        if path.exists():
            assert data._check(entry, path) is None, entry.name
            assert entry.sha256 is not None or entry.name in ("tinystories-train", "tinystories-valid"), entry.name
            checked += 1
    if checked == 0:
        pytest.skip(f"no registered file in {data.cache_dir()}")


def test_cut_off_download_is_refused_and_nothing_cached(server, tmp_path):
    """The server announces 1 MiB and closes after 349,525 bytes; an entry with no size or checksum."""
    entry = DataFile("t", "t.bin", f"{server}/cut")
    with pytest.raises(DataError, match=r"t: the download .* was cut off: 349,525 of 1,048,576 bytes"):
        fetch(entry, directory=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_ignored_range_request_is_refused(server, tmp_path):
    entry = DataFile("r", "r.bin", f"{server}/norange", byte_range=(0, 99))
    with pytest.raises(DataError, match=r"ignored the byte range request \(HTTP 200\)"):
        fetch(entry, directory=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_alternate_form_is_accepted_and_others_refused(server, tmp_path):
    entry = DataFile("t", "t.bin", f"{server}/good", size=5, sha256="0" * 64, alternates=((len(PAYLOAD), SHA),))
    assert fetch(entry, directory=tmp_path).read_bytes() == PAYLOAD
    bad = DataFile("u", "u.bin", f"{server}/good", size=5, sha256="0" * 64, alternates=((7, SHA),))
    with pytest.raises(DataError, match=r"size 16,384 bytes, expected 5 or 7"):
        fetch(bad, directory=tmp_path)


def test_downloaded_file_is_readable_by_others(server, tmp_path):
    """mkstemp-style 0600 would lock other users of a shared cache out; the file gets 0666 & ~umask."""
    old = os.umask(0o022)
    try:
        path = fetch(DataFile("t", "t.bin", f"{server}/good", size=len(PAYLOAD), sha256=SHA), directory=tmp_path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_leftover_part_of_a_killed_download_is_removed(server, tmp_path):
    entry = DataFile("t", "t.bin", f"{server}/good", size=len(PAYLOAD), sha256=SHA)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".t.bin.{socket.gethostname()}.{int(dead.stdout)}.part"
    stale.write_bytes(b"half a file")
    alive = tmp_path / f".t.bin.{socket.gethostname()}.{os.getppid()}.part"  # a running process: left alone
    alive.write_bytes(b"in progress")
    fetch(entry, directory=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["t.bin", alive.name])


def test_unwritable_cache_folder_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    entry = DataFile("t", "t.bin", "http://127.0.0.1:9/x", size=3)
    with pytest.raises(DataError, match=r"t: .* is not there and the cache folder .* is not writable .*LMCORE_CACHE_DIR"):
        fetch(entry, directory=tmp_path / "file" / "cache")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full to fill a disk")
def test_full_disk_is_a_clear_error_and_leaves_nothing(server, tmp_path, monkeypatch):
    """The temporary file is a link to /dev/full, whose writes fail with ENOSPC as a full disk's do."""
    monkeypatch.setattr(data, "_part_name", lambda entry: "full.part")
    (tmp_path / "full.part").symlink_to("/dev/full")
    entry = DataFile("t", "t.bin", f"{server}/good", size=len(PAYLOAD), sha256=SHA)
    with pytest.raises(DataError, match=r"t: no space left in .* nothing was saved"):
        fetch(entry, directory=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_command_line_errors_are_one_line(tmp_path):
    env = {**os.environ, "LMCORE_CACHE_DIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "-m", "lmcore", "fetch", "nope"], capture_output=True, text=True, env=env)
    assert run.returncode == 1 and run.stderr.startswith("error: unknown data file 'nope'") and "Traceback" not in run.stderr
