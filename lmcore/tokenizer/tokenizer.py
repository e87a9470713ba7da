"""The BPE tokenizer: text to ids and back.

Encoding replays the training: split out special tokens, pre-tokenize, then inside each
pre-token apply merges in the order they were learned (lowest rank first). Natural text
repeats its words, so a cache from pre-token to ids does most of the work.
"""

from __future__ import annotations

import functools
import json
import operator
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import tokenfile
from . import gpt2
from .batch import PairRanks, bpe_many
from .pretokenize import (
    ENDOFTEXT,
    check_special_tokens,
    find_chunk_boundaries,
    last_safe_cut,
    pretokenize,
    read_utf8,
    special_token_re,
    split_special,
    worker_pool,
)

__all__ = ["Tokenizer", "encode_speed", "load_gpt2"]

FORMAT = "lmcore-bpe"
FORMAT_VERSION = 1


class Tokenizer:
    """Byte-level BPE tokenizer built from ``vocab`` (id -> bytes), ``merges`` and special tokens.

    Special tokens missing from ``vocab`` are appended with new ids. Every merge must name two
    tokens of the vocabulary whose concatenation is also in it, else ``ValueError``. Two settings
    steer how :meth:`encode` meets pre-tokens it has not seen: ``inline_bpe`` (new pre-tokens a
    piece may run BPE on one by one) and ``lookahead`` (characters batched when there are more).
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
        self._pair_ranks = PairRanks(self._rank_of, self._made, self._byte_ids, self.vocab_size)  # the merges as arrays
        self._whole = self._whole_pretokens()
        self._cache = _PretokenCache(self)  # pre-token -> ids
        self.inline_bpe = 16  # new pre-tokens per piece that run BPE on the spot, see encode
        self.lookahead = 1 << 18  # characters pre-tokenized ahead when more new pre-tokens turn up

    def _whole_pretokens(self) -> dict[str, tuple[int]]:
        """Pre-token -> ``(id,)`` for each whole token that is text (a piece of a character never is)."""
        whole = {}
        for i in self.whole_token_ids.tolist():
            try:
                whole[self.vocab[i].decode("utf-8")] = (i,)
            except UnicodeDecodeError:
                pass
        return whole

    def __getstate__(self) -> dict:
        # sent to encode_file's workers: the whole-token table is rebuilt there, faster than pickled
        return {k: v for k, v in self.__dict__.items() if k not in ("_whole", "_cache")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._whole = self._whole_pretokens()
        self._cache = _PretokenCache(self)

    @property
    def whole_token_ids(self) -> np.ndarray:
        """Ids of the tokens that BPE on their own bytes leaves whole, proved from the merges alone
        (``PairRanks._whole_tokens`` in ``lmcore.tokenizer.batch`` has the proof): a new pre-token
        spelling one of them is encoded without running BPE."""
        return np.flatnonzero(self._pair_ranks.whole)

    @property
    def vocab_size(self) -> int:
        """One more than the largest id (ids index an embedding table)."""
        return max(self.vocab) + 1

    # -- encoding -----------------------------------------------------------------------------
    def _bpe(self, pretoken: str) -> list[int]:
        """Apply the merges to one pre-token: ``bpe_pretoken`` with this vocabulary's tables."""
        return bpe_pretoken(pretoken, self._byte_ids, self._rank_of, self._made)

    def _learn(self, pretokens: Iterable[str]) -> None:
        """Put every pre-token the cache lacks into it; many new ones go through BPE together.

        A new pre-token that is one token of the vocabulary, proved to stay whole under BPE
        (``PairRanks.whole``, worked out once from the merges), needs no BPE at all.
        """
        pretokens = set(pretokens)
        new = pretokens.difference(self._cache)
        if len(self._cache) + len(new) > self._cache_size:  # bounded memory: start afresh
            self._cache.clear()
            new = pretokens
        whole = list(filter(self._whole.__contains__, new))
        self._cache.update(zip(whole, map(self._whole.__getitem__, whole)))
        new.difference_update(whole)
        if len(new) < 64:  # too few to pay for the set-up of a NumPy pass
            self._cache.update((p, self._bpe(p)) for p in new)
            return
        self._cache.update(bpe_many(new, self._pair_ranks))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special tokens become their single ids (longest match wins).

        Each piece between special tokens is pre-tokenized and its pre-tokens' ids read from the
        cache, a loop that stays in C (``map``, ``chain``). The cache fills in a pre-token it lacks
        (``_PretokenCache``): at once if it spells a whole token, by BPE on the spot for the
        first ``inline_bpe`` others of a piece. A piece with more new pre-tokens than that stops:
        the next ``lookahead`` characters are pre-tokenized too, every new pre-token among them
        goes through BPE together (:func:`~lmcore.tokenizer.batch.bpe_many`), and the piece is
        read again. In-domain text brings a few new words per piece; code or a new language
        brings many, where one NumPy pass over thousands of pre-tokens beats thousands of loops.
        """
        out: list[int] = []
        lookup = self._cache.__getitem__
        pieces = list(split_special(text, self._special_re))
        ahead: dict[int, list[str]] = {}  # pieces already pre-tokenized, by index
        for i, (piece, is_special) in enumerate(pieces):
            if is_special:
                out.append(self.special_ids[piece])
                continue
            pretokens = ahead.pop(i) if i in ahead else pretokenize(piece)
            self._cache.budget = self.inline_bpe
            done = len(out)
            try:
                out.extend(chain.from_iterable(map(lookup, pretokens)))
            except KeyError:
                del out[done:]
                j, chars = i + 1, 0
                while j < len(pieces) and chars < self.lookahead:
                    if not pieces[j][1]:
                        ahead[j] = pretokenize(pieces[j][0])
                        chars += len(pieces[j][0])
                    j += 1
                self._learn(chain(pretokens, *ahead.values()))
                out.extend(chain.from_iterable(map(lookup, pretokens)))
        return out

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
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes the ids stand for; an id outside the vocabulary raises ``ValueError``."""
        try:
            return b"".join(self.vocab[i] for i in ids)
        except KeyError as e:
            raise ValueError(f"unknown token id {e.args[0]!r}: this vocabulary has ids 0..{self.vocab_size - 1}") from None
        except TypeError as e:
            raise ValueError(f"token ids must be integers ({e})") from None

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; byte sequences that are not valid UTF-8 become U+FFFD.

        Ids must be integers (Python, NumPy or one-element integer tensors): ``1.7`` is refused,
        not rounded to a token.
        """
        return self.decode_bytes(_as_id(i) for i in ids).decode("utf-8", errors="replace")

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
        dtype, vocabulary size and token count, which training checks.
        """
        if self.vocab_size > 1 << 16:
            raise ValueError(f"vocab of {self.vocab_size} ids does not fit uint16")
        size = os.path.getsize(input_path)
        bounds = find_chunk_boundaries(input_path, max(num_workers, -(-size // chunk_bytes)), self.special_tokens)
        jobs = [(os.fspath(input_path), a, b, errors) for a, b in zip(bounds, bounds[1:])]
        bar = tqdm(total=size, unit="B", unit_scale=True, desc="encode", disable=not progress)
        with tokenfile.TokenWriter(output_path, self.vocab_size) as out, bar:
            if num_workers == 1:
                _init_worker(self)
                results = map(_encode_chunk, jobs)
            else:
                pool = worker_pool(num_workers, _init_worker, (self,))
                results = pool.imap(_encode_chunk, jobs)
            try:
                for (_, a, b, _), arr in zip(jobs, results):
                    out.write(arr)
                    bar.update(b - a)
            finally:
                if num_workers != 1:
                    pool.terminate()
        return out.count


class _PretokenCache(dict):
    """Pre-token -> ids, filling in a pre-token it lacks (``__missing__``, called by ``dict``'s
    own lookup) while such misses are few.

    A missing pre-token that spells a whole token (``Tokenizer.whole_token_ids``) is filled in at
    once; another runs BPE (``bpe_pretoken``) while ``budget`` lasts (``encode`` sets it per piece),
    else raises ``KeyError``, which sends ``encode`` to the batched BPE. Past ``size`` entries it
    starts afresh, so memory stays bounded.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        super().__init__()
        self.whole = tokenizer._whole
        # BPE with the tokenizer's tables, not its bound method: no reference cycle, so a
        # tokenizer is freed as soon as it is dropped, not at the next full garbage collection
        self.bpe = functools.partial(
            bpe_pretoken, byte_ids=tokenizer._byte_ids, rank_of=tokenizer._rank_of, made=tokenizer._made
        )
        self.size = tokenizer._cache_size
        self.budget = 0

    def __missing__(self, pretoken: str) -> Sequence[int]:
        ids = self.whole.get(pretoken)
        if ids is None:
            if self.budget <= 0:
                raise KeyError(pretoken)
            self.budget -= 1
            ids = self.bpe(pretoken)
        if len(self) >= self.size:  # bounded memory: start afresh
            self.clear()
        self[pretoken] = ids
        return ids


_WORKER: Tokenizer | None = None


def _init_worker(tokenizer: Tokenizer) -> None:
    global _WORKER
    _WORKER = tokenizer


def _encode_chunk(job: tuple[str, int, int, str]) -> np.ndarray:
    path, start, end, errors = job
    return np.asarray(_WORKER.encode(read_utf8(path, start, end, errors)), dtype=np.uint16)


def bpe_pretoken(pretoken: str, byte_ids: list[int], rank_of: dict[tuple[int, int], int], made: list[int]) -> list[int]:
    """BPE on one pre-token: its bytes' ids (``byte_ids[b]``), then the merges lowest rank first,
    each step merging its pair everywhere, left to right (``a a a`` with pair ``a a`` gives ``new a``).

    ``rank_of`` maps a pair of ids to its merge's rank, ``made[rank]`` is the id that merge makes.
    ``pair_rank[i]`` is the rank of ``ids[i], ids[i + 1]``, so finding a step's pair is one ``min``
    and each merge looks up only the two pairs it changed.
    """
    ids = [byte_ids[b] for b in pretoken.encode("utf-8")]
    none = len(made)  # above every rank: "no merge"
    pair_rank = [rank_of.get(pair, none) for pair in zip(ids, ids[1:])]
    while pair_rank and (best := min(pair_rank)) != none:
        i = -1
        while best in pair_rank:  # left to right: the two pairs a merge makes are never this pair
            i = pair_rank.index(best, i + 1)
            ids[i : i + 2] = (made[best],)
            del pair_rank[i]
            if i > 0:
                pair_rank[i - 1] = rank_of.get((ids[i - 1], ids[i]), none)
            if i < len(pair_rank):
                pair_rank[i] = rank_of.get((ids[i], ids[i + 1]), none)
    return ids


def _as_id(i) -> int:
    try:
        return operator.index(i)
    except TypeError:
        raise ValueError(f"token ids must be integers, got {i!r} ({type(i).__name__})") from None


def encode_speed(tokenizer: Tokenizer, text: str, repeats: int = 3) -> tuple[float, float]:
    """MB/s of ``tokenizer.encode(text)``, ``(cold, warm)``, the best of ``repeats`` each.

    Cold: a copy of the tokenizer with an empty pre-token cache, so every distinct pre-token is
    worked out once (a whole token looked up, any other through BPE); warm: the same copy again,
    every pre-token a cache hit.
    """
    mb = len(text.encode("utf-8")) / 1e6
    cold = warm = float("inf")
    for _ in range(repeats):
        fresh = Tokenizer(tokenizer.vocab, tokenizer.merges, tokenizer.special_tokens)
        start = time.perf_counter()
        fresh.encode(text)
        middle = time.perf_counter()
        fresh.encode(text)
        cold, warm = min(cold, middle - start), min(warm, time.perf_counter() - middle)
    return mb / cold, mb / warm


def load_gpt2(special_tokens: Sequence[str] = (ENDOFTEXT,)) -> Tokenizer:
    """GPT-2's tokenizer from its published vocab and merges (fetched into the data cache)."""
    from ..data import fetch

    return Tokenizer.from_files(fetch("gpt2-vocab"), fetch("gpt2-merges"), special_tokens)
