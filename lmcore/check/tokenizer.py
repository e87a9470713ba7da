"""Checkers for chapter 2's pieces: the BPE trainer and the tokenizer, held against
:func:`lmcore.tokenizer.train_bpe` and :class:`lmcore.tokenizer.Tokenizer` (which lmcore's tests
hold equal to tiktoken on GPT-2's vocabulary)."""

from __future__ import annotations

import functools
import io
import operator
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .. import tokenizer as ref
from ..tokenizer.pretokenize import ENDOFTEXT as EOT
from ..tokenizer.pretokenize import pretokenize, special_token_re, split_special
from ..tokenizer.train import apply_merge, count_pairs, initial_vocab
from .report import Checker, Mistake, Report, register

__all__ = ["train_bpe", "tokenizer"]

PAD = "<|pad|>"


# --- train_bpe ---------------------------------------------------------------------------------

#: The handout's example, one word a line: GPT-2's pattern then cuts it exactly where the handout's
#: whitespace split does (each newline is a pre-token of its own, with no pair in it).
HANDOUT = "\n".join(["low"] * 5 + ["lower"] * 2 + ["widest"] * 3 + ["newest"] * 6)
#: After merging "z z" and "y y", three pairs tie: by bytes "zz a" wins; the smaller pair is "b c",
#: and comparing token ids instead of bytes picks "yy a" (its id is the later, greater one).
TIES = "\n".join(["zza"] * 2 + ["zz"] * 2 + ["yya"] * 2 + ["yy", "bc", "bc"])
#: Short stories between two special tokens: joined across them, "t" and "s" would meet; left in
#: the text, "endoftext" and "pad" would be merged.
STORIES = "".join(f"{story}{sep}" for story in ["the cat", "sat on", "the mat", "the sun"] * 3 for sep in [EOT, PAD])
REAL_CHARS = 200_000  # characters of the TinyStories sample: a few hundred KB
SLOWER = 10  # how many times the reference's time the reader's trainer may take


def _tinystories(chars: int) -> str:
    """The first ``chars`` characters of the TinyStories sample (from the data cache)."""
    from ..data import fetch

    with open(fetch("tinystories-sample"), encoding="utf-8") as f:
        return f.read(chars)


Pick = Callable[[dict, dict], tuple[int, int]]


def _smaller_wins(pairs: dict, vocab: dict) -> tuple[int, int]:
    return min(pairs, key=lambda p: (-pairs[p], vocab[p[0]], vocab[p[1]]))


def _greater_id_wins(pairs: dict, vocab: dict) -> tuple[int, int]:
    return max(pairs, key=lambda p: (pairs[p], p))


def _pretoken_counts(text: str, specials: list[str], mistake: str = "") -> Counter[str]:
    """Pre-token counts as training makes them, or as a usual mistake does: ``"kept"`` pre-tokenizes
    the special tokens with the text, ``"dropped"`` deletes them (joining their neighbours),
    ``"whole"`` counts each piece between special tokens as one word (no pre-tokenizing)."""
    pieces = [p for p, special in split_special(text, special_token_re(specials)) if not special]
    if mistake == "whole":
        return Counter(pieces)
    if mistake in ("kept", "dropped"):
        pieces = [text if mistake == "kept" else "".join(pieces)]
    return Counter(t for p in pieces for t in pretokenize(p))


def _mistrained(text: str, vocab_size: int, specials: list[str], mistake: str = "", pick: Pick | None = None):
    """``(vocab, merges)`` as a trainer with one usual mistake learns them: a wrong cut (``mistake``,
    see :func:`_pretoken_counts`) or a wrong tie rule (``pick``, applied by recounting every pair)."""
    counts = _pretoken_counts(text, specials, mistake)
    if pick is None:
        return ref.merge_pretokens(counts, vocab_size, specials)
    vocab = initial_vocab(specials, vocab_size)
    words, freqs = [list(w.encode("utf-8")) for w in counts], list(counts.values())
    merges = []
    while len(vocab) < vocab_size and (pairs := count_pairs(words, freqs)[0]):
        a, b = pick(pairs, vocab)
        vocab[len(vocab)] = vocab[a] + vocab[b]
        merges.append((vocab[a], vocab[b]))
        words = [apply_merge(w, a, b, len(vocab) - 1) for w in words]
    return vocab, merges


def _same_training(expected: tuple[dict, list], got: Any) -> tuple[bool, str]:
    """Merges equal in order, then the vocab id by id; the account names the first difference."""
    if not (isinstance(got, tuple | list) and len(got) == 2 and isinstance(got[0], dict)):
        return False, f"expected a pair (vocab: dict, merges: list), got {type(got).__name__}"
    (vocab, merges), (got_vocab, got_merges) = expected, got
    got_merges = [tuple(m) if isinstance(m, tuple | list) else m for m in got_merges]
    for i, (e, g) in enumerate(zip(merges, got_merges)):
        if e != g:
            return False, f"merge {i} is {g!r}, expected {e!r}"
    if len(got_merges) != len(merges):
        return False, f"{len(got_merges)} merges, expected {len(merges)}"
    for i in sorted(vocab.keys() | got_vocab.keys(), key=str):
        if vocab.get(i) != got_vocab.get(i):
            return False, f"vocab[{i!r}] is {got_vocab.get(i)!r}, expected {vocab.get(i)!r}"
    return True, f"as expected: {len(merges)} merges, a vocab of {len(vocab)}"


def _training_rules(expected: tuple[dict, list], vocab_size: int) -> list[tuple[Callable[[Any], bool], str]]:
    vocab, merges = expected
    return [
        (lambda g: not (isinstance(g, tuple | list) and len(g) == 2), "return a pair: (vocab, merges)"),
        (lambda g: any(isinstance(t, str) for t in g[0].values()) or any(isinstance(a, str) for m in g[1] for a in m),
         "tokens are bytes, not str: keep them as bytes (a merge is a pair of bytes, b'e', b'st')"),
        (lambda g: sorted(g[0].values()) == sorted(vocab.values()),
         "the right tokens under the wrong ids: ids 0-255 are the bytes, then the special tokens in the order given, "
         "then one id per merge in the order learned"),
        (lambda g: len(g[0]) != vocab_size,
         f"the vocab should hold vocab_size tokens ({vocab_size}): 256 bytes, the special tokens, one per merge"),
    ]


@register("train_bpe")
def train_bpe(fn: Callable, show: bool = True) -> Report:
    """``train_bpe(input_path, vocab_size, special_tokens)``: the handout's example, the tie rule,
    two special tokens, a slice of TinyStories, and its speed against the reference trainer's."""
    c = Checker("train_bpe", fn, "function", ("input_path", "vocab_size", "special_tokens"))
    ties = "ties go to the lexicographically greater pair (compare the tokens' bytes: max by (count, bytes_a, bytes_b))"
    specials_hint = ("split the text on the special tokens first (re.escape each) and pre-tokenize each piece alone: "
                     "no merge may span, include or join across a special token")
    within = "count pairs only inside each pre-token (GPT-2's pattern cuts the text first), never across two"
    small = [
        ("the handout's example (one word a line)", HANDOUT, 256 + 1 + 6, [EOT]),
        ("ties: greater bytes win, not greater ids", TIES, 256 + 1 + 3, [EOT]),
        ("two special tokens between short stories", STORIES, 256 + 2 + 12, [EOT, PAD]),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name, text, size, specials in small:
            path = Path(tmp) / f"{len(c.report.cases)}.txt"
            path.write_text(text, encoding="utf-8")
            expected = ref.train_bpe(path, size, specials, num_workers=1)
            wrong = functools.partial(_mistrained, text, size, specials)
            c.case(name, lambda f, path=path, size=size, specials=specials: f(str(path), size, list(specials)), expected,
                   mistakes=[Mistake(ties, lambda wrong=wrong: wrong(pick=_smaller_wins)),
                             Mistake("ties compare the tokens' bytes, not their ids: " + ties,
                                     lambda wrong=wrong: wrong(pick=_greater_id_wins)),
                             Mistake(specials_hint, lambda wrong=wrong: wrong("kept")),
                             Mistake(specials_hint, lambda wrong=wrong: wrong("dropped")),
                             Mistake(within, lambda wrong=wrong: wrong("whole"))],
                   rules=_training_rules(expected, size), same=_same_training)
            if not c.ok:
                return c.done(show)
        real = f"TinyStories, the first {REAL_CHARS:,} characters, vocab 500"
        if not all(case.passed for case in c.report.cases):
            c.fail(real + ", and speed", "not run until the small cases pass")
            return c.done(show)
        path = Path(tmp) / "stories.txt"
        path.write_text(_tinystories(REAL_CHARS), encoding="utf-8")
        # the reference the chapter printed (pure Python, one process) sets the pace
        start = time.perf_counter()
        expected = ref.train_bpe(path, 500, [EOT], num_workers=1, fast=False)
        took = {"reference": time.perf_counter() - start}

        def timed(f: Callable) -> Any:
            start = time.perf_counter()
            out = f(str(path), 500, [EOT])
            took["yours"] = time.perf_counter() - start
            return out

        c.case(real, timed, expected, rules=_training_rules(expected, 500), same=_same_training)
        if c.ok and "yours" in took:
            yours, bound = took["yours"], SLOWER * took["reference"]
            detail = f"{yours:.2f} s, the reference {took['reference']:.2f} s (allowed: {SLOWER}x, {bound:.2f} s)"
            if yours <= bound:
                c.passed("speed", detail)
            else:
                c.fail("speed", detail, "too slow: after a merge, update the counts of only the words that hold the "
                       "merged pair (keep an index from pair to words, as merge_pair does) instead of recounting all")
    return c.done(show)


# --- Tokenizer ---------------------------------------------------------------------------------

STORY = "Once upon a time, Lily found a big puddle. The dog wagged its tail!  It's 3 o'clock.\n\nThey played all day."
WITH_SPECIALS = f"{EOT}Lily smiled.{EOT} The end.{EOT}"
OVERLAPPING = f"Tom ran.{EOT}{EOT}Sue sat.{EOT}{EOT}{EOT}The end"
MIXED = "naïve café, 你好世界 🐶🎉 ćevapčići, Привет! Ünïcödé"
#: Lines whose whitespace runs cross the line ends: encoded line by line they would cut differently.
LINES = f"Lily saw a dog.  \n  The dog ran.\n\n\nTom laughed.{EOT}Once upon a time,\n there was a cat.\n"


@functools.cache
def _gpt2() -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """GPT-2's vocab and merges from the data cache, read once a process (it takes a fraction of a second)."""
    from ..data import fetch

    return ref.read_vocab_merges(fetch("gpt2-vocab"), fetch("gpt2-merges"))


@functools.cache
def _reference(specials: tuple[str, ...] | None) -> ref.Tokenizer:
    return ref.Tokenizer(*_gpt2(), specials)


class _Raised:
    """What a call raised, kept as its answer, so a rule can name it."""

    def __init__(self, e: Exception) -> None:
        self.e = e

    def __repr__(self) -> str:
        return f"raised {type(self.e).__name__}: {self.e}"


def _decoding(ids: list[int]) -> Callable[[Any], Any]:
    """``tok.decode(ids)``, with a UnicodeDecodeError returned rather than raised (a rule names it)."""
    def run(tok: Any) -> Any:
        try:
            return tok.decode(list(ids))
        except UnicodeDecodeError as e:
            return _Raised(e)
    return run


def _encoded_with(bpe: Callable[[bytes], list[bytes]], text: str, specials: tuple[str, ...],
                  split: Callable[[str], list[str]] = pretokenize) -> list[int]:
    """The ids of ``text`` as a usual mistake makes them: each piece ``split`` makes (GPT-2's pre-tokens
    unless told) is cut into tokens by ``bpe``; special tokens are handled right."""
    ids = {t: i for i, t in _reference(specials).vocab.items()}
    out: list[int] = []
    for piece, special in split_special(text, special_token_re(specials)):
        for part in [piece] if special else split(piece):
            out.extend(ids[t] for t in ([part.encode("utf-8")] if special else bpe(part.encode("utf-8"))))
    return out


def _by_rank(data: bytes) -> list[bytes]:
    """The right merges (the reference's ``bpe``), for a mistake that cuts the text wrongly before them."""
    tok = _reference(())
    return [tok.vocab[i] for i in tok.bpe(data.decode("utf-8"))]


def _distinct(answer: Callable[[], Any], other: Callable[[], Any]) -> Any:
    """``answer()``, unless another mistake gives the same on this case: then it names nothing here."""
    if (got := answer()) == other():
        raise ValueError("two mistakes agree on this case")
    return got


def _leftmost_first(data: bytes) -> list[bytes]:
    """Merges applied where they first occur in the text, not lowest rank first."""
    ranks = _ranks()
    tokens = [bytes([b]) for b in data]
    while (i := next((i for i, p in enumerate(zip(tokens, tokens[1:])) if p in ranks), None)) is not None:
        tokens[i : i + 2] = [tokens[i] + tokens[i + 1]]
    return tokens


def _longest_match(data: bytes) -> list[bytes]:
    """The longest vocabulary token at each position, ignoring the merges."""
    known = set(_gpt2()[0].values())
    tokens, i = [], 0
    while i < len(data):
        j = next(j for j in range(len(data), i, -1) if data[i:j] in known)
        tokens.append(data[i:j])
        i = j
    return tokens


@functools.cache
def _ranks() -> dict[tuple[bytes, bytes], int]:
    return {m: r for r, m in enumerate(_gpt2()[1])}


def _same_ids(expected: list[int], got: Any) -> tuple[bool, str]:
    """Ids equal; else where they first differ, with the tokens' bytes so the reader sees the cut."""
    if isinstance(got, _Raised):
        return False, repr(got)
    try:
        got = [operator.index(i) for i in got]
    except TypeError:
        return False, f"expected a list of int ids, got {type(got).__name__}"
    if got == expected:
        return True, f"as expected: {len(got)} ids"
    vocab = _reference((EOT, EOT + EOT)).vocab  # GPT-2's, and the one special token added
    i = next((i for i, (e, g) in enumerate(zip(expected, got)) if e != g), min(len(got), len(expected)))
    show = lambda ids: [vocab.get(t, t) for t in ids[i : i + 3]]  # noqa: E731
    return False, f"{len(got)} ids, expected {len(expected)}; from id {i}: {show(got)}, expected {show(expected)}"


def _same_text(expected: str, got: Any) -> tuple[bool, str]:
    """Text equal; else where it first differs."""
    if not isinstance(got, str):
        return False, f"expected a str, got {got!r}"[:120]
    if got == expected:
        return True, f"as expected: {got[:40]!r}" + ("..." if len(got) > 40 else "")
    i = next((i for i, (e, g) in enumerate(zip(expected, got)) if e != g), min(len(got), len(expected)))
    return False, f"from character {i}: {got[i : i + 12]!r}, expected {expected[i : i + 12]!r}"


@register("Tokenizer")
def tokenizer(cls: type, show: bool = True) -> Report:
    """``Tokenizer(vocab, merges, special_tokens=None)`` with GPT-2's vocabulary: ``encode`` on English,
    special tokens (overlapping ones too) and mixed scripts, ``decode`` of characters split across
    tokens, round trips, and ``encode_iterable`` over a file and over small chunks."""
    from ..data import DataError

    c = Checker("Tokenizer", cls, "class", ("vocab", "merges", "special_tokens"))
    try:
        vocab, merges = _gpt2()
    except DataError as e:  # offline, with no copy in the cache: say so in one line
        c.report.problem = f"needs GPT-2's vocabulary, which chapter 2 fetches: {e}"
        return c.done(show)
    made: dict = {}

    def mine(specials: tuple[str, ...] | None):
        """The reader's tokenizer for these special tokens, built once a check (50,000 merges take a moment)."""
        if specials not in made:
            args = (dict(vocab), list(merges)) + (() if specials is None else (list(specials),))
            made[specials] = cls(*args)
        return made[specials]

    one, two = (EOT,), (EOT, EOT + EOT)
    unsplit = ("special tokens were split into pieces: find them in the text first (longest first, re.escape each) "
               "and give each its one id")
    order = "merges go lowest rank first (the order training learned them), wherever in the pre-token the pair is"
    pieces = "pre-tokenize with GPT-2's pattern first, then merge inside each pre-token: no merge spans two"
    longest = "encoding applies the merges, by rank; the longest vocabulary token at each position is not the same"
    encodes = [  # name, text, special tokens
        ("English", STORY, one),
        ("special tokens", WITH_SPECIALS, one),
        ("overlapping specials: the longest wins", OVERLAPPING, two),
        ("no special tokens given: <|endoftext|> is text", WITH_SPECIALS, None),
        ("mixed scripts: accents, CJK, emoji", MIXED, one),
    ]
    new_ids = (lambda g: isinstance(g, _Raised) and isinstance(g.e, KeyError),
               "a special token that is not in the vocabulary gets a new id: max(vocab) + 1, then the next, in the order given")

    def encoded(s: tuple[str, ...] | None, text: str) -> list[int] | _Raised:
        try:
            return mine(s).encode(text)
        except KeyError as e:  # a special token looked up in a vocabulary that lacks it: a rule names it
            return _Raised(e)

    for name, text, specials in encodes:
        mistakes = [Mistake(unsplit, lambda text=text: _reference(None).encode(text)) if specials else
                    Mistake("with special_tokens=None nothing is special: '<|endoftext|>' is ordinary text",
                            lambda text=text: _reference(one).encode(text))]
        if specials == two:
            mistakes.append(Mistake("when special tokens overlap the longest must win: try them longest first",
                                    lambda text=text: _reference(one).encode(text)))
        by_order, by_length = (functools.partial(_encoded_with, cut, text, specials or ())
                               for cut in (_leftmost_first, _longest_match))
        mistakes += [Mistake(order, functools.partial(_distinct, by_order, by_length)),
                     Mistake(longest, functools.partial(_distinct, by_length, by_order)),
                     Mistake(pieces, lambda text=text, s=specials or (): _encoded_with(_by_rank, text, s, lambda p: [p]))]
        c.case(f"encode: {name}", lambda t, text=text, s=specials: encoded(s, text),
               _reference(specials).encode(text), mistakes=mistakes, same=_same_ids, rules=[new_ids])
        if not c.ok:
            return c.done(show)

    token_bytes = _reference(one).vocab
    dog = _reference(one).encode("🐶")  # three tokens: the first two bytes, then one byte, then one byte
    whole = ("decode the joined bytes of all the ids at once, with errors='replace': one character's bytes may "
             "lie in several tokens, and a lone part of one is not UTF-8")
    raised = [(lambda g: isinstance(g, _Raised), whole), (lambda g: isinstance(g, bytes), "decode returns str: " + whole)]
    alone = "decode each token's bytes together, not token by token: a character split across tokens comes apart"
    decodes = [  # name, ids, the text they stand for
        ("decode: mixed scripts and a special token", _reference(one).encode(MIXED + EOT), MIXED + EOT),
        ("decode: 🐶 split across three tokens", dog, "🐶"),
        ("decode: a lone part of a character becomes U+FFFD", dog[:1] + _reference(one).encode(" ok"), "\ufffd ok"),
    ]

    def token_by_token(ids: list[int]) -> str:
        return "".join(token_bytes[i].decode("utf-8", "replace") for i in ids)

    for name, ids, text in decodes:
        c.case(name, lambda t, ids=ids: _decoding(ids)(mine(one)), text,
               mistakes=[Mistake(alone, lambda ids=ids: token_by_token(ids)),
                         Mistake("bytes that are not UTF-8 become U+FFFD: errors='replace', not 'ignore'",
                                 lambda ids=ids: b"".join(token_bytes[i] for i in ids).decode("utf-8", "ignore"))],
               rules=raised, same=_same_text)
        if not c.ok:
            return c.done(show)
    everything = STORY + WITH_SPECIALS + MIXED
    c.case("decode(encode(text)) gives the text back", lambda t: _decoding(mine(one).encode(everything))(mine(one)),
           everything, mistakes=[Mistake(alone, lambda: token_by_token(mine(one).encode(everything)))],
           rules=raised, same=_same_text)

    chunked = "encoding each chunk on its own cuts words and special tokens at its ends: buffer the text, encode up " \
              "to a safe cut (where a non-space meets whitespace, outside any special token), keep the rest"
    long = LINES + WITH_SPECIALS + MIXED
    streams: list[tuple[str, list[str], Callable[[list[str]], Iterable[str]]]] = [  # name, its parts, the iterable
        ("a file, line by line", LINES.splitlines(keepends=True), lambda parts: io.StringIO("".join(parts))),
        ("chunks of five characters", [long[i : i + 5] for i in range(0, len(long), 5)], iter),
    ]
    for name, parts, stream in streams:
        c.case(f"encode_iterable: {name}", lambda t, parts=parts, stream=stream: list(mine(one).encode_iterable(stream(parts))),
               _reference(one).encode("".join(parts)), same=_same_ids,
               mistakes=[Mistake(chunked, lambda parts=parts: [i for p in parts for i in _reference(one).encode(p)])])
    return c.done(show)

