"""The chapter 2 checkers: the reference passes, and each usual mistake, written as a learner would
write it, fails with the hint that names it."""

import functools
import math
import re
from collections import Counter

import pytest
import regex

from lmcore import check
from lmcore import tokenizer as ref
from lmcore.data import cache_dir
from lmcore.tokenizer import GPT2_PATTERN

EOT = "<|endoftext|>"


@pytest.fixture(scope="module", autouse=True)
def data_cache():
    for name in ("gpt2-vocab.json", "gpt2-merges.txt", "tinystories-v1-train-first-2mib.txt"):
        if not (cache_dir() / name).exists():
            pytest.skip(f"{name} not in the data cache {cache_dir()}")


# --- train_bpe: a learner's trainer, recounting every pair after each merge, and its mistakes ------


def learner_train_bpe(input_path, vocab_size, special_tokens, *, pick="bytes", specials="split", pretokenize=True,
                      specials_last=False):
    text = open(input_path, encoding="utf-8").read()
    pieces = re.split("|".join(map(re.escape, special_tokens)), text)
    if specials == "dropped":  # mistake: the special tokens deleted, their neighbours joined
        pieces = ["".join(pieces)]
    elif specials == "kept":  # mistake: the special tokens left in the text
        pieces = [text]
    words = Counter()
    for piece in pieces:
        for word in regex.findall(GPT2_PATTERN, piece) if pretokenize else [piece]:
            words[tuple(word.encode("utf-8"))] += 1
    vocab = {i: bytes([i]) for i in range(256)}
    if not specials_last:
        for s in special_tokens:
            vocab[len(vocab)] = s.encode("utf-8")
    merges = []
    while len(vocab) < vocab_size - (len(special_tokens) if specials_last else 0):
        pairs = Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += n
        if not pairs:
            break
        if pick == "bytes":
            best = max(pairs, key=lambda p: (pairs[p], vocab[p[0]], vocab[p[1]]))
        elif pick == "smaller":  # mistake: a tie goes to the smaller pair
            best = min(pairs, key=lambda p: (-pairs[p], vocab[p[0]], vocab[p[1]]))
        else:  # mistake: a tie goes to the greater pair of ids
            best = max(pairs, key=lambda p: (pairs[p], p))
        new = len(vocab)
        vocab[new] = vocab[best[0]] + vocab[best[1]]
        merges.append((vocab[best[0]], vocab[best[1]]))
        merged = Counter()
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if word[i : i + 2] == best:
                    out.append(new)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += n
        words = merged
    if specials_last:
        for s in special_tokens:
            vocab[len(vocab)] = s.encode("utf-8")
    return vocab, merges


def test_the_reference_trainer_passes_every_case():
    report = check.train_bpe(ref.train_bpe, show=False)
    assert report and [c.name for c in report.cases][-1] == "speed"


def test_the_learners_trainer_passes_the_small_cases():
    report = check.train_bpe(learner_train_bpe, show=False)
    assert all(c.passed for c in report.cases[:3])


@pytest.mark.parametrize("mistake, words", [
    (dict(pick="smaller"), "lexicographically greater pair"),
    (dict(pick="ids"), "not their ids"),
    (dict(specials="kept"), "split the text on the special tokens"),
    (dict(specials="dropped"), "split the text on the special tokens"),
    (dict(pretokenize=False), "only inside each pre-token"),
    (dict(specials_last=True), "the right tokens under the wrong ids"),
], ids=["smaller-pair-wins", "ids-compared", "specials-kept", "specials-dropped", "across-pre-tokens", "specials-last"])
def test_a_trainer_with_a_usual_mistake_gets_its_hint(mistake, words):
    report = check.train_bpe(functools.partial(learner_train_bpe, **mistake), show=False)
    assert not report and report.hints and all(words in h for h in report.hints), report.hints
    assert "not run until the small cases pass" in str(report)


def test_a_trainer_stub_and_a_wrong_kind():
    def stub(input_path, vocab_size, special_tokens):
        raise NotImplementedError

    assert "not written yet" in str(check.train_bpe(stub, show=False))
    assert "keep the stub's signature" in str(check.train_bpe(lambda path: None, show=False))
    str_tokens = lambda *a: ({i: t.decode("latin-1") for i, t in ref.train_bpe(*a)[0].items()}, ref.train_bpe(*a)[1])  # noqa: E731
    assert "tokens are bytes, not str" in check.train_bpe(str_tokens, show=False).hints[0]


# --- Tokenizer: a learner's tokenizer, and its mistakes --------------------------------------------


class Learner:
    def __init__(self, vocab, merges, special_tokens=None):
        self.vocab = dict(vocab)
        self.ids = {token: i for i, token in self.vocab.items()}
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.special_tokens = self.order(special_tokens or [])
        for s in self.special_tokens:
            if s.encode("utf-8") not in self.ids:
                self.ids[s.encode("utf-8")] = len(self.vocab)
                self.vocab[len(self.vocab)] = s.encode("utf-8")

    def order(self, special_tokens):
        return sorted(special_tokens, key=len, reverse=True)  # the longest first, so it wins an overlap

    def pieces(self, text):
        if not self.special_tokens:
            return [(text, False)]
        parts = re.split("(" + "|".join(map(re.escape, self.special_tokens)) + ")", text)
        return [(p, i % 2 == 1) for i, p in enumerate(parts) if p]

    def words(self, piece):
        return regex.findall(GPT2_PATTERN, piece)

    def bpe(self, word):
        tokens = [bytes([b]) for b in word]
        while len(tokens) > 1:
            best = min(zip(tokens, tokens[1:]), key=lambda p: self.ranks.get(p, math.inf))
            if best not in self.ranks:
                break
            out, i = [], 0
            while i < len(tokens):
                if tuple(tokens[i : i + 2]) == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(tokens[i])
                    i += 1
            tokens = out
        return tokens

    def encode(self, text):
        ids = []
        for piece, special in self.pieces(text):
            if special:
                ids.append(self.ids[piece.encode("utf-8")])
            else:
                for word in self.words(piece):
                    ids += [self.ids[t] for t in self.bpe(word.encode("utf-8"))]
        return ids

    def encode_iterable(self, iterable):
        yield from self.encode("".join(iterable))  # right, if not lazy

    def decode(self, ids):
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors="replace")


class NoSpecials(Learner):
    def pieces(self, text):
        return [(text, False)]


class SpecialsInGivenOrder(Learner):
    def order(self, special_tokens):
        return list(special_tokens)


class AlwaysEndOfText(Learner):
    def __init__(self, vocab, merges, special_tokens=None):
        super().__init__(vocab, merges, special_tokens or [EOT])


class LeftmostMergeFirst(Learner):
    def bpe(self, word):
        tokens = [bytes([b]) for b in word]
        i = 0
        while i < len(tokens) - 1:
            if (tokens[i], tokens[i + 1]) in self.ranks:
                tokens[i : i + 2] = [tokens[i] + tokens[i + 1]]
                i = 0
            else:
                i += 1
        return tokens


class LongestMatch(Learner):
    def bpe(self, word):
        tokens = []
        while word:
            n = max(n for n in range(1, len(word) + 1) if word[:n] in self.ids)
            tokens.append(word[:n])
            word = word[n:]
        return tokens


class NoPretokenizing(Learner):
    def words(self, piece):
        return [piece]


class DecodeEachToken(Learner):
    def decode(self, ids):
        return "".join(self.vocab[i].decode("utf-8", errors="replace") for i in ids)


class DecodeIgnoringErrors(Learner):
    def decode(self, ids):
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors="ignore")


class DecodeStrictly(Learner):
    def decode(self, ids):
        return b"".join(self.vocab[i] for i in ids).decode("utf-8")


class EncodeEachChunk(Learner):
    def encode_iterable(self, iterable):
        for chunk in iterable:
            yield from self.encode(chunk)


def test_the_reference_tokenizer_and_the_learners_pass_every_case():
    assert check.tokenizer(ref.Tokenizer, show=False)
    assert check.tokenizer(Learner, show=False)


@pytest.mark.parametrize("cls, words", [
    (NoSpecials, "special tokens were split into pieces"),
    (SpecialsInGivenOrder, "the longest must win"),
    (AlwaysEndOfText, "nothing is special"),
    (LeftmostMergeFirst, "lowest rank first"),
    (LongestMatch, "the longest vocabulary token"),
    (NoPretokenizing, "pre-tokenize with GPT-2's pattern"),
    (DecodeEachToken, "not token by token"),
    (DecodeIgnoringErrors, "not 'ignore'"),
    (DecodeStrictly, "errors='replace'"),
    (EncodeEachChunk, "encoding each chunk on its own"),
], ids=lambda x: x.__name__ if isinstance(x, type) else "")
def test_a_tokenizer_with_a_usual_mistake_gets_its_hint(cls, words):
    report = check.tokenizer(cls, show=False)
    assert not report and report.hints and all(words in h for h in report.hints), report.hints


def test_a_tokenizer_stub_and_a_wrong_kind():
    class Stub:
        def __init__(self, vocab, merges, special_tokens=None):
            raise NotImplementedError

    assert "not written yet" in str(check.tokenizer(Stub, show=False))
    assert "pass the class itself" in str(check.tokenizer(Learner({0: b"a"}, []), show=False))
