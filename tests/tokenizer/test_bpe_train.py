"""train_bpe, the reference trainer and the fast one, against a slow, obviously correct BPE written here."""

from collections import Counter

import pytest
import regex

from lmcore.data import cache_dir
from lmcore.tokenizer import GPT2_PATTERN, count_pretokens, find_chunk_boundaries, train_bpe


def reference_bpe(text: str, vocab_size: int, specials: list[str]):
    """Recount every pair after every merge; pick max by (count, pair)."""
    pieces = regex.split("|".join(regex.escape(s) for s in specials), text) if specials else [text]
    words = Counter()
    for piece in pieces:
        for pre in regex.findall(GPT2_PATTERN, piece):
            words[tuple(bytes([b]) for b in pre.encode())] += 1
    vocab = [bytes([i]) for i in range(256)] + [s.encode() for s in specials]
    merges = []
    while len(vocab) < vocab_size:
        pairs = Counter()
        for w, n in words.items():
            for p in zip(w, w[1:]):
                pairs[p] += n
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        vocab.append(best[0] + best[1])
        new_words = Counter()
        for w, n in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] += n
        words = new_words
    return dict(enumerate(vocab)), merges


CORPORA = {
    "ties": "ab ab cd cd ef ef gh gh",  # every pair ties: the greater pair must win
    "prefix-ties": "a ab ab a abc abc",  # ties between byte strings that are prefixes of each other
    "specials": "low lower<|endoftext|>lowest newer<|endoftext|> wider low<|endoftext|><|endoftext|>",
    "unicode": "ćevapi ćevapčići čaj 针针针 🐶🐶 naïve naïve café",
    "repeats": "aaaaaaa aaaa bbbbb aaaabbbb" * 3,
    "story": "Once upon a time, there was a little girl named Lily. She liked to play.\n" * 4,
}


@pytest.mark.parametrize("fast", [False, True], ids=["reference", "fast"])
@pytest.mark.parametrize("name", CORPORA)
@pytest.mark.parametrize("workers", [1, 2])
def test_training_equals_reference(tmp_path, name, workers, fast):
    text = CORPORA[name]
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    specials = ["<|endoftext|>"]
    for size in (257, 270, 300):
        vocab, merges = train_bpe(path, size, specials, num_workers=workers, fast=fast)
        ref_vocab, ref_merges = reference_bpe(text, size, specials)
        assert merges == ref_merges, (name, size)
        assert vocab == ref_vocab, (name, size)


def test_no_merge_crosses_a_special_token(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("ab<|endoftext|>ab<|endoftext|>ab", encoding="utf-8")
    vocab, merges = train_bpe(path, 300, ["<|endoftext|>"])
    assert vocab[256] == b"<|endoftext|>"
    assert all(b"<" not in a + b and b">" not in a + b for a, b in merges)
    assert merges == [(b"a", b"b")]  # nothing else is left to merge


def test_deterministic_and_worker_count_independent():
    path = cache_dir() / "tinystories-v1-train-first-2mib.txt"
    if not path.exists():
        pytest.skip("TinyStories sample not in the data cache")
    one = train_bpe(path, 600, ["<|endoftext|>"], num_workers=1)
    two = train_bpe(path, 600, ["<|endoftext|>"], num_workers=2)
    assert one == two


def test_chunk_boundaries_fall_on_safe_cuts(tmp_path):
    path = tmp_path / "c.txt"
    docs = [f"story {i} " * (i + 1) for i in range(50)]
    path.write_bytes("<|endoftext|>".join(docs).encode())
    data = path.read_bytes()
    bounds = find_chunk_boundaries(path, 7, ["<|endoftext|>"])
    assert len(bounds) == 8 and bounds[0] == 0 and bounds[-1] == len(data) and bounds == sorted(set(bounds))
    for b in bounds[1:-1]:  # between a non-space and a space, never inside a special token
        assert not data[b - 1 : b].isspace() and data[b : b + 1].isspace()
        assert all(not (m.start() < b < m.end()) for m in regex.finditer(regex.escape(b"<|endoftext|>"), data))
    counts = count_pretokens(path, ["<|endoftext|>"], num_workers=2, chunk_bytes=200)
    assert counts == Counter(t for d in docs for t in regex.findall(GPT2_PATTERN, d))


@pytest.mark.parametrize("fast", [False, True], ids=["reference", "fast"])
def test_bad_vocab_size(tmp_path, fast):
    path = tmp_path / "c.txt"
    path.write_text("abc")
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe(path, 256, ["<|endoftext|>"], fast=fast)


def test_merge_counts_are_the_counts_of_the_merged_pairs(tmp_path):
    from lmcore.tokenizer import fast_merge_pretokens

    counts = Counter(regex.findall(GPT2_PATTERN, CORPORA["story"] + CORPORA["repeats"]))
    recorded: list[int] = []
    _, merges = fast_merge_pretokens(counts, 290, [], merge_counts=recorded)
    words = {tuple(bytes([b]) for b in w.encode()): n for w, n in counts.items()}
    for (a, b), n in zip(merges, recorded):
        pairs = Counter()
        for w, c in words.items():
            for p in zip(w, w[1:]):
                pairs[p] += c
        assert pairs[(a, b)] == n == max(pairs.values())
        new = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == (a, b):
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] = new.get(tuple(out), 0) + c
        words = new


def test_profile_training_reports_the_prefix_it_trained_on(tmp_path):
    from lmcore.tokenizer import count_pretokens, profile_training

    story = "the cat sat on the mat and then the dog ran off. "
    path = tmp_path / "c.txt"
    path.write_text((story * 20 + "<|endoftext|>") * 40, encoding="utf-8")
    cost = profile_training(path, 300, max_bytes=5_000)
    prefix = path.read_bytes()[:5_000]
    expected = prefix[: prefix.rfind(b"<|endoftext|>")]
    (tmp_path / "p.txt").write_bytes(expected)
    assert cost["bytes"] == len(expected) < 5_000
    assert cost["distinct"] == len(count_pretokens(tmp_path / "p.txt", ["<|endoftext|>"]))
    assert cost["pretokenize_s"] > 0 and cost["merge_s"] > 0
    assert cost["peak_mib"] >= cost["start_mib"] > 10  # a Python process with the imports holds more than 10 MiB
    assert profile_training(path, 300)["bytes"] == path.stat().st_size


def test_steps_follow_the_handout_example_and_the_fast_trainer_agrees():
    from lmcore.tokenizer import fast_merge_pretokens, merge_pretokens

    counts = {"low": 5, "lower": 2, "widest": 3, "newest": 6}
    steps: list[dict] = []
    _, merges = merge_pretokens(counts, 256 + 6, steps=steps)
    handout = ["s t", "e st", "o w", "l ow", "w est", "n e"]  # the handout's first six merges
    assert [f"{a.decode()} {b.decode()}" for a, b in merges] == handout == [f"{a.decode()} {b.decode()}" for a, b in
                                                                             (s["pair"] for s in steps)]
    assert steps[0]["counts"][(b"s", b"t")] == steps[0]["counts"][(b"e", b"s")] == 9  # a tie, to the greater pair
    assert list(steps[0]["counts"])[:2] == [(b"s", b"t"), (b"e", b"s")]  # in the order BPE prefers
    assert steps[-1]["words"]["newest"] == [b"ne", b"west"]
    assert fast_merge_pretokens(counts, 256 + 12) == merge_pretokens(counts, 256 + 12)
