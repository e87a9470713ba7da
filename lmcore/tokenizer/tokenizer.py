"""The BPE tokenizer: text to ids and back.

Encoding replays the training: split out special tokens, pre-tokenize, then inside each
pre-token apply merges in the order they were learned (lowest rank first). Natural text
repeats its words, so a cache from pre-token to ids does most of the work. This is the
reference; :class:`~lmcore.tokenizer.fast.FastTokenizer` gives the same ids faster.
"""

from __future__ import annotations

import functools
import json
import operator
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from .. import tokenfile
from . import gpt2
from .pretokenize import ENDOFTEXT, check_special_tokens, last_safe_cut, map_chunks, pretokenize, special_token_re, split_special
from .train import apply_merge

__all__ = ["Tokenizer", "load_gpt2"]

FORMAT = "lmcore-bpe"
FORMAT_VERSION = 1


class Tokenizer:
    """Byte-level BPE tokenizer built from ``vocab`` (id -> bytes), ``merges`` and special tokens.

    Special tokens missing from ``vocab`` are appended with new ids. Every merge must name two
    tokens of the vocabulary whose concatenation is also in it, else ``ValueError``. The cache
    of pre-token ids starts afresh past ``cache_size`` entries, so memory stays bounded.
    """

    def __init__(
        self,
        vocab: dict[int, bytes],
        merges: Sequence[tuple[bytes, bytes]],
        special_tokens: Sequence[str] | None = None,
        *,
        cache_size: int = 1 << 17,
    ) -> None:
        self.vocab: dict[int, bytes] = dict(vocab)
        self.merges: list[tuple[bytes, bytes]] = list(merges)
        ids = {}
        for i, token in self.vocab.items():
            ids.setdefault(token, i)
        missing = [b for b in range(256) if bytes([b]) not in ids]
        if missing:
            raise ValueError(f"vocab lacks {len(missing)} of the 256 single bytes (first: {missing[0]}); not a byte-level vocab")
        self._byte_ids = [ids[bytes([b])] for b in range(256)]
        self._rank_of: dict[tuple[int, int], int] = {}  # (left id, right id) -> the merge's rank
        for rank, (a, b) in enumerate(self.merges):
            for part in (a, b, a + b):
                if part not in ids:
                    raise ValueError(f"merge {rank} ({a!r}, {b!r}): {part!r} is not in the vocabulary; vocab and merges disagree")
            self._rank_of[(ids[a], ids[b])] = rank  # a pair listed twice keeps its later rank
        self._made = [ids[a + b] for a, b in self.merges]  # rank -> id of the token it makes
        self.special_tokens: list[str] = check_special_tokens(special_tokens)
        self.special_ids: dict[str, int] = {}
        for s in self.special_tokens:
            token = s.encode("utf-8")
            if token not in ids:
                ids[token] = max(self.vocab) + 1
                self.vocab[ids[token]] = token
            self.special_ids[s] = ids[token]
        self._special_re = special_token_re(self.special_tokens)
        self._longest_special = max((len(s) for s in self.special_tokens), default=0)
        self._cache_size = cache_size
        self._cache: dict[str, list[int]] = {}  # pre-token -> ids

    @property
    def vocab_size(self) -> int:
        """One more than the largest id (ids index an embedding table)."""
        return max(self.vocab) + 1

    # -- encoding -----------------------------------------------------------------------------
    def bpe(self, pretoken: str) -> list[int]:
        """The ids of one pre-token: its bytes, then merges, lowest rank first, as training made them."""
        ids = [self._byte_ids[b] for b in pretoken.encode("utf-8")]
        while len(ids) >= 2:
            # of the adjacent pairs, the one training merged first (the lowest rank)
            pair = min(zip(ids, ids[1:]), key=lambda p: self._rank_of.get(p, len(self.merges)))
            if pair not in self._rank_of:
                break  # no pair left that training merged
            # merge it everywhere, left to right: "a a a" with the pair (a, a) gives "aa a"
            ids = apply_merge(ids, *pair, self._made[self._rank_of[pair]])
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special tokens become their single ids (longest match wins)."""
        ids: list[int] = []
        # special tokens first, so no pre-token (and no merge) spans one
        for piece, is_special in split_special(text, self._special_re):
            if is_special:
                ids.append(self.special_ids[piece])
                continue
            for pretoken in pretokenize(piece):
                # text repeats its words: work each pre-token out once, then look it up
                if pretoken not in self._cache:
                    if len(self._cache) >= self._cache_size:
                        self._cache.clear()  # bounded memory: start afresh
                    self._cache[pretoken] = self.bpe(pretoken)
                ids.extend(self._cache[pretoken])
        return ids

    def encode_iterable(self, iterable: Iterable[str], buffer_chars: int = 1 << 16) -> Iterator[int]:
        """Yield the ids of the concatenated strings (a text file handle, say) lazily.

        Text is buffered until about ``buffer_chars`` characters, then encoded up to the last
        safe cut, so memory stays bounded however long the input is, and the ids equal
        ``encode("".join(iterable))``.
        """
        parts: list[str] = []
        held = 0
        for chunk in iterable:
            parts.append(chunk)
            held += len(chunk)
            if held >= buffer_chars:
                text = "".join(parts)
                cut = last_safe_cut(text, self._special_re, self._longest_special)
                if cut:
                    yield from self.encode(text[:cut])
                    text = text[cut:]
                parts, held = [text], len(text)
        if parts:
            yield from self.encode("".join(parts))

    # -- decoding -----------------------------------------------------------------------------
    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; byte sequences that are not valid UTF-8 become U+FFFD.

        Ids must be integers (Python, NumPy or one-element integer tensors): ``1.7`` is refused,
        not rounded to a token; an id outside the vocabulary raises ``ValueError``.
        """
        try:
            # join the bytes, then decode once: one character's bytes may lie in several tokens
            data = b"".join(self.vocab[_as_id(i)] for i in ids)
        except KeyError as e:
            raise ValueError(f"unknown token id {e.args[0]!r}: this vocabulary has ids 0..{self.vocab_size - 1}") from None
        return data.decode("utf-8", errors="replace")

    # -- files ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write one JSON file: format tag, special tokens, vocab and merges in GPT-2's byte alphabet."""
        data = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "special_tokens": self.special_tokens,
            "vocab": {gpt2.to_text(t): i for i, t in sorted(self.vocab.items())},
            "merges": [f"{gpt2.to_text(a)} {gpt2.to_text(b)}" for a, b in self.merges],
        }
        Path(path).write_text(json.dumps(data, ensure_ascii=False, indent=0), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Read a file written by :meth:`save`."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not an lmcore tokenizer file ({e})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path}: not an lmcore tokenizer file (no \"format\": \"{FORMAT}\")")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path}: tokenizer format version {data.get('version')}, this lmcore reads {FORMAT_VERSION}")
        fields = {"vocab": dict, "merges": list, "special_tokens": list}
        for name, kind in fields.items():
            if not isinstance(data.get(name), kind):
                got = "missing" if name not in data else f"a {type(data[name]).__name__}"
                raise ValueError(f"{path}: field {name!r} must be a JSON {'object' if kind is dict else 'array'}, it is {got}")
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in data["vocab"].values()):
            raise ValueError(f"{path}: field 'vocab' must map token strings to non-negative integer ids")
        vocab = {i: gpt2.from_text(t, str(path)) for t, i in data["vocab"].items()}
        merges = []
        for n, line in enumerate(data["merges"]):
            parts = line.split(" ") if isinstance(line, str) else []
            if len(parts) != 2:
                raise ValueError(f"{path}: merges[{n}] must be two tokens separated by one space, got {line!r}")
            merges.append((gpt2.from_text(parts[0], str(path)), gpt2.from_text(parts[1], str(path))))
        try:
            return cls(vocab, merges, data["special_tokens"])
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    @classmethod
    def from_files(
        cls, vocab_path: str | os.PathLike, merges_path: str | os.PathLike, special_tokens: Sequence[str] | None = None
    ) -> Tokenizer:
        """Build from GPT-2-style ``vocab.json`` and ``merges.txt``."""
        vocab, merges = gpt2.read_vocab_merges(vocab_path, merges_path)
        return cls(vocab, merges, special_tokens)

    def encode_file(
        self,
        input_path: str | os.PathLike,
        output_path: str | os.PathLike,
        *,
        num_workers: int = 1,
        chunk_bytes: int = 1 << 20,
        progress: bool = False,
        errors: str = "strict",
    ) -> int:
        """Encode a UTF-8 text file to a flat ``uint16`` array on disk; returns the number of tokens.

        Chunks are cut where the ids cannot change (:func:`~lmcore.tokenizer.find_chunk_boundaries`,
        the planner training uses) and encoded in ``num_workers`` processes; results are written
        in file order, so the file equals ``encode`` of the whole text. ``uint16`` holds ids below
        65,536, two bytes a token; a small JSON beside it (:mod:`lmcore.tokenfile`) records the
        dtype, vocabulary size and token count, which training checks. The chunks are encoded by
        :class:`~lmcore.tokenizer.fast.FastTokenizer` (tested to give :meth:`encode`'s ids).
        """
        from .fast import FastTokenizer  # here, not at the top: the fast layer builds on this module

        with tokenfile.TokenWriter(output_path, self.vocab_size) as out:  # refuses a vocabulary uint16 cannot hold
            fast = self if isinstance(self, FastTokenizer) else FastTokenizer(self.vocab, self.merges, self.special_tokens)
            work = functools.partial(_encode_uint16, fast)  # 2 bytes an id back from each worker, not a list
            for ids in map_chunks(input_path, work, self.special_tokens, num_workers, chunk_bytes, errors=errors,
                                  desc="encode", progress=progress):
                out.write(ids)
        return out.count


def _encode_uint16(tokenizer: Tokenizer, text: str) -> np.ndarray:
    return np.asarray(tokenizer.encode(text), dtype=np.uint16)


def _as_id(i) -> int:
    try:
        return operator.index(i)
    except TypeError:
        raise ValueError(f"token ids must be integers, got {i!r} ({type(i).__name__})") from None


def load_gpt2(special_tokens: Sequence[str] = (ENDOFTEXT,), *, fast: bool = True) -> Tokenizer:
    """GPT-2's tokenizer from its published vocab and merges (fetched into the data cache): a
    :class:`~lmcore.tokenizer.fast.FastTokenizer`, or the reference :class:`Tokenizer` with ``fast=False``."""
    from ..data import fetch
    from .fast import FastTokenizer

    cls = FastTokenizer if fast else Tokenizer
    return cls.from_files(fetch("gpt2-vocab"), fetch("gpt2-merges"), special_tokens)
