"""Named data files: where they come from, how they are checked, and where they are cached.

Every chapter asks for its data by name (``fetch("tinystories-sample")``) and gets a local path.
The file is looked up in the cache directory first; only when it is missing is it downloaded,
into a temporary file that is renamed into the cache only after every check passed: as many
bytes arrived as the server announced (``Content-Length``, ``Content-Range``), and the size and
SHA-256 match the registry where the publisher's file is known. So a crash, a cut-off or
corrupted transfer, or a wrong server never leaves a bad file behind. A temporary file left by
a process that was killed is removed by the next download of the same file.

The cache directory is ``$LMCORE_CACHE_DIR`` when set (CI points it at a folder of offline
copies), else ``~/.cache/lmcore`` (or ``$XDG_CACHE_HOME/lmcore``).
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import socket
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

__all__ = ["DataFile", "DataError", "REGISTRY", "cache_dir", "fetch", "sha256_of"]

_HF = "https://huggingface.co"
_TS = f"{_HF}/datasets/roneneldan/TinyStories/resolve/main"
_GPT2 = f"{_HF}/openai-community/gpt2/resolve/main"


class DataError(RuntimeError):
    """A named file could not be provided; the message says which file and what to do."""


@dataclass(frozen=True)
class DataFile:
    """One named file.

    ``byte_range`` (first, last), inclusive like HTTP's ``Range: bytes=first-last``, asks the
    server for a slice of ``url`` instead of the whole file. ``size`` and ``sha256`` are checked
    when known; ``None`` means the publisher gives none, and then only the length the server
    announced is checked. ``alternates`` lists other accepted ``(size, sha256)`` pairs: the same
    content in another published form (GPT-2's merges with and without their ``#version`` line).
    """

    name: str
    filename: str
    url: str
    size: int | None = None
    sha256: str | None = None
    byte_range: tuple[int, int] | None = None
    description: str = ""
    alternates: tuple[tuple[int, str], ...] = ()


REGISTRY: dict[str, DataFile] = {
    f.name: f
    for f in [
        DataFile(
            "tinystories-sample",
            "tinystories-v1-train-first-2mib.txt",
            f"{_TS}/TinyStories-train.txt",
            size=2_097_152,
            sha256="5352b299dcb1a32898b2d779b145b5a05f3e1265953fd21c264c9f9f9c9ae33d",
            byte_range=(0, 2_097_151),
            description="first 2 MiB of TinyStories v1 train; ends mid-story",
        ),
        DataFile(
            "tinystories-valid-sample",
            "tinystories-v1-valid-sample.txt",
            f"{_TS}/TinyStories-valid.txt",
            size=794_375,
            sha256="5fc1fb0113df62b567fb271806cd645ce8d75f59c58ca0b764c03d3b6ff34ca6",
            byte_range=(0, 794_374),
            description="start of TinyStories v1 validation split",
        ),
        DataFile(
            "tinystories-train",
            "TinyStoriesV2-GPT4-train.txt",
            f"{_TS}/TinyStoriesV2-GPT4-train.txt",
            description="full TinyStories V2 (GPT-4) training file, about 2.1 GB",
        ),
        DataFile(
            "tinystories-valid",
            "TinyStoriesV2-GPT4-valid.txt",
            f"{_TS}/TinyStoriesV2-GPT4-valid.txt",
            description="full TinyStories V2 (GPT-4) validation file, about 22 MB",
        ),
        DataFile(
            "gpt2-vocab",
            "gpt2-vocab.json",
            f"{_GPT2}/vocab.json",
            size=1_042_301,
            sha256="196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
            description="GPT-2's byte-level BPE vocabulary",
        ),
        DataFile(
            "gpt2-merges",
            "gpt2-merges.txt",
            f"{_GPT2}/merges.txt",
            # The published file starts with a '#version: 0.2' line; copies without it (such as
            # CI's offline one) are the same merges, and both load (see lmcore.tokenizer.load_gpt2).
            size=456_318,
            sha256="1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
            alternates=((456_304, "ac33235097fe06d4a8fff0feac994644809e6eb6ab70669e1e9fd40ae032428e"),),
            description="GPT-2's 50,000 merges",
        ),
    ]
}


def cache_dir() -> Path:
    """The folder that holds downloaded files: ``$LMCORE_CACHE_DIR``, else the user cache."""
    env = os.environ.get("LMCORE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lmcore"


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in blocks (the file is never held in memory whole)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _lookup(name: str | DataFile) -> DataFile:
    if isinstance(name, DataFile):
        return name
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise DataError(f"unknown data file {name!r}; known names: {known}") from None


def _accepted(entry: DataFile) -> list[tuple[int | None, str | None]]:
    return [(entry.size, entry.sha256), *entry.alternates]


def _check(entry: DataFile, path: Path) -> str | None:
    """Return what is wrong with ``path`` as ``entry``, or None when it checks out."""
    size = path.stat().st_size
    forms = [(n, sha) for n, sha in _accepted(entry) if n is None or n == size]
    if not forms:
        return f"size {size:,} bytes, expected {' or '.join(f'{n:,}' for n, _ in _accepted(entry))}"
    digests = {sha for _, sha in forms}
    if None not in digests:
        digest = sha256_of(path)
        if digest not in digests:
            return f"sha256 {digest}, expected {' or '.join(sorted(digests))}"
    return None


def _part_name(entry: DataFile) -> str:
    """The temporary file of a download in progress: named after this host and process, so a
    later download can tell a leftover of a killed process from a live one."""
    return f".{entry.filename}.{socket.gethostname()}.{os.getpid()}.part"


def _remove_stale_parts(entry: DataFile, folder: Path) -> None:
    """Delete this host's ``.part`` files of ``entry`` whose process no longer runs (kill -9, power loss)."""
    prefix = f".{entry.filename}.{socket.gethostname()}."
    for part in folder.glob(f".{entry.filename}.*.part"):
        pid = part.name[len(prefix) : -len(".part")] if part.name.startswith(prefix) else ""
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            part.unlink(missing_ok=True)
        except PermissionError:
            pass  # alive, another user's


def _readable_by_all(path: Path) -> None:
    """Give a finished download the permissions of any new file (``0666 & ~umask``), not the
    temporary file's 0600, so a cache shared between users stays readable."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def fetch(
    name: str | DataFile,
    *,
    directory: str | os.PathLike | None = None,
    progress: bool | None = None,
    timeout: float = 30.0,
) -> Path:
    """Return a local path to the named file, downloading it into the cache if needed.

    A file already in the cache is trusted by size (a full hash of a 2 GB file on every call
    would be slow); a download is checked by length, size and SHA-256 before it enters the cache.
    ``progress`` defaults to a bar when stderr is a terminal.
    """
    entry = _lookup(name)
    folder = Path(directory) if directory is not None else cache_dir()
    target = folder / entry.filename
    if target.exists():
        sizes = [n for n, _ in _accepted(entry)]
        if None not in sizes and target.stat().st_size not in sizes:
            raise DataError(
                f"{entry.name}: cached file {target} has {target.stat().st_size:,} bytes, "
                f"expected {' or '.join(f'{n:,}' for n in sizes)}; delete it and call fetch({entry.name!r}) again"
            )
        return target

    where = (
        f"set LMCORE_CACHE_DIR to a writable folder (or to one that holds {entry.filename}), "
        "or copy the file there by hand"
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_stale_parts(entry, folder)
        tmp = folder / _part_name(entry)
        out = open(tmp, "wb")
    except OSError as e:
        raise DataError(
            f"{entry.name}: {target} is not there and the cache folder {folder} is not writable ({e}); {where}"
        ) from e
    if progress is None:
        progress = sys.stderr.isatty()
    try:
        with out:
            _download(entry, out, progress=progress, timeout=timeout)
        problem = _check(entry, tmp)
        if problem is not None:
            raise DataError(
                f"{entry.name}: download from {entry.url} failed its check ({problem}); "
                "nothing was saved. Try again later; if it persists the file has changed upstream"
            )
        _readable_by_all(tmp)
        os.replace(tmp, target)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DataError(f"{entry.name}: no space left in {folder} while downloading; nothing was saved. "
                            f"Free some space, or {where}") from e
        raise DataError(f"{entry.name}: could not write into {folder} ({e}); nothing was saved; {where}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _download(entry: DataFile, out, *, progress: bool, timeout: float) -> None:
    headers = {"User-Agent": "lmcore"}
    if entry.byte_range is not None:
        first, last = entry.byte_range
        headers["Range"] = f"bytes={first}-{last}"
    request = urllib.request.Request(entry.url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(
            f"{entry.name}: could not download {entry.url} ({reason}). If this machine is offline, "
            f"copy {entry.filename} into {Path(out.name).parent} by hand or point LMCORE_CACHE_DIR at a "
            "folder that holds it"
        ) from e
    with response:
        expected = _expected_length(entry, response)
        received = 0
        try:
            with tqdm(total=expected, unit="B", unit_scale=True, desc=entry.filename, disable=not progress) as bar:
                while block := response.read(1 << 16):
                    out.write(block)
                    received += len(block)
                    bar.update(len(block))
        except (http.client.HTTPException, TimeoutError, ConnectionError) as e:
            raise DataError(f"{entry.name}: the download from {entry.url} broke off after {received:,} bytes ({e!r}); "
                            "nothing was saved. Try again") from e
        if expected is not None and received != expected:
            raise DataError(
                f"{entry.name}: the download from {entry.url} was cut off: {received:,} of {expected:,} bytes arrived; "
                "nothing was saved. Try again"
            )


def _expected_length(entry: DataFile, response) -> int | None:
    """How many bytes the response must deliver: its ``Content-Length``, and for a byte range
    also the range's length, which ``Content-Range`` must confirm."""
    length = response.headers.get("Content-Length")
    expected = int(length) if length is not None and length.strip().isdigit() else None
    if entry.byte_range is None:
        return expected
    first, last = entry.byte_range
    if response.status != 206:
        raise DataError(f"{entry.name}: the server ignored the byte range request (HTTP {response.status}); nothing was saved")
    span = response.headers.get("Content-Range", "")
    if not span.startswith(f"bytes {first}-{last}/"):
        raise DataError(f"{entry.name}: asked for bytes {first}-{last}, the server sent {span or 'no Content-Range'!r}; "
                        "nothing was saved")
    if expected is not None and expected != last - first + 1:
        raise DataError(f"{entry.name}: Content-Length {expected:,} does not match the range {first}-{last}; nothing was saved")
    return last - first + 1


def main(argv: list[str] | None = None) -> int:
    """``python -m lmcore fetch NAME...`` downloads (or finds) files; ``list`` lists them."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m lmcore", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the named files")
    get = sub.add_parser("fetch", help="make sure the named files are in the cache")
    get.add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "list":
        for entry in REGISTRY.values():
            print(f"{entry.name:26} {entry.filename:38} {entry.description}")
        return 0
    try:
        for n in args.names:
            print(f"{n}: {fetch(n)}")
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
