#!/usr/bin/env python3
"""BPE training and encoding: lmcore against HF tokenizers and tiktoken, one run.

    python benchmarks/bench_bpe.py [--workers 2] [--repeat 10] [--part train|encode|file]

Training: wall time and peak memory, lmcore vs HF ``tokenizers`` (``BpeTrainer``, byte-level,
same vocab size and special token), on the 2 MiB TinyStories sample and on the sample repeated
``--repeat`` times. Every measurement runs in a fresh process; peak memory is that process's
maximum RSS plus its largest worker's (``getrusage``), so it bounds what the job needed.

Encoding: GPT-2's ranks, one process and one thread, lmcore (``FastTokenizer``, the default) vs tiktoken vs HF tokenizers, in
MB/s, cold and warm, on four kinds of text: TinyStories (the domain the book trains on) and the
three of :mod:`lmcore.texts` (English technical prose, Python source, eight-script text); then
``Tokenizer.encode_file`` with 2 workers vs 1 on the large input (best of 3, each from an empty
pre-token cache).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EOT = "<|endoftext|>"


def _peak_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + kids) / 1024  # Linux reports KiB


def best_seconds(fn, repeats: int = 5) -> float:
    """Fastest of ``repeats`` runs: the least disturbed by the rest of the machine."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def read_text(kind: str) -> str:
    """The TinyStories sample, or one of :data:`lmcore.texts.KINDS` (2 MB at most)."""
    from lmcore.data import fetch
    from lmcore.texts import out_of_domain_text

    if kind == "tinystories":
        return fetch("tinystories-sample").read_text(encoding="utf-8")
    return out_of_domain_text(kind, 1 << 21)


def child(task: str, path: str, workers: int, vocab_size: int) -> dict:
    """One measurement, in this (fresh) process."""
    from lmcore.data import fetch
    from lmcore.tokenizer import GPT2_PATTERN, FastTokenizer, pretokenize, train_bpe

    if task == "train-lmcore":
        t = time.perf_counter()
        train_bpe(path, vocab_size, [EOT], num_workers=workers)
        return {"seconds": time.perf_counter() - t, "peak_mib": _peak_mib()}
    if task == "train-hf":
        os.environ["RAYON_NUM_THREADS"] = str(workers)
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        t = time.perf_counter()
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=[EOT], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf.train([path], trainer)
        return {"seconds": time.perf_counter() - t, "peak_mib": _peak_mib()}

    vocab, merges = fetch("gpt2-vocab"), fetch("gpt2-merges")
    if task == "encode":
        # lmcore, tiktoken and HF in one process, timed in turn, best of 5 rounds: machine noise hits all alike.
        # "cold" is a tokenizer built just before (empty pre-token cache), "warm" the same one's second pass.
        os.environ["RAYON_NUM_THREADS"] = "1"
        import tiktoken
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import models, pre_tokenizers

        text = read_text(path)
        size_mb = len(text.encode("utf-8")) / 1e6

        def lmcore_tok():  # the library's default: the fast layer (load_gpt2 returns one)
            return FastTokenizer.from_files(vocab, merges, [EOT])

        def hf_tok():
            hf = HFTokenizer(models.BPE.from_file(str(vocab), str(merges)))
            hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
            hf.add_special_tokens([EOT])
            return hf

        tok = lmcore_tok()
        ranks = {b: i for i, b in tok.vocab.items() if i != tok.special_ids[EOT]}
        enc = tiktoken.Encoding("gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: 50256})
        ids = tok.encode(text)
        if ids != enc.encode(text, allowed_special={EOT}) or ids != hf_tok().encode(text).ids:
            raise SystemExit(f"{path}: lmcore's ids differ from tiktoken's or HF's")
        best = {}

        def timed(name, fn, *args):
            t = time.perf_counter()
            fn(*args)
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)

        for _ in range(5):
            tok = lmcore_tok()
            timed("lmcore cold", tok.encode, text)
            timed("lmcore warm", tok.encode, text)
            timed("tiktoken", lambda: enc.encode(text, allowed_special={EOT}))
            hf = hf_tok()
            timed("hf cold", hf.encode, text)
            timed("hf warm", hf.encode, text)
        timed("lmcore build", lmcore_tok)
        out = {name: size_mb / t for name, t in best.items() if name != "lmcore build"}
        return {**out, "build_s": best["lmcore build"], "mb": size_mb, "pretokens": len(set(pretokenize(text)))}
    if task == "encode-file":
        # a fresh tokenizer (empty cache) for each of 3 runs, so 1 and 2 workers both start cold; best of 3
        times = []
        for _ in range(3):
            tok = FastTokenizer.from_files(vocab, merges, [EOT])
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                tok.encode_file(path, Path(tmp) / "ids.bin", num_workers=workers)
                times.append(time.perf_counter() - start)
        return {"mb_s": os.path.getsize(path) / 1e6 / min(times)}
    raise ValueError(task)


def measure(task: str, path: Path | str, workers: int, vocab_size: int = 10_000) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", task, str(path), str(workers), str(vocab_size)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10, help="the large input is the sample repeated this often")
    parser.add_argument("--part", choices=["train", "encode", "file"], help="run one part only")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        task, path, workers, vocab_size = args.child
        print(json.dumps(child(task, path, int(workers), int(vocab_size))))
        return

    from lmcore.data import fetch

    sample = fetch("tinystories-sample")
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.txt"
        data = sample.read_bytes()
        cut = data.rfind(EOT.encode())  # repeat whole stories only
        big.write_bytes(data[:cut] * args.repeat)
        inputs = {f"{sample.stat().st_size / 1e6:.1f} MB": sample, f"{big.stat().st_size / 1e6:.1f} MB": big}

        if args.part in (None, "train"):
            train_table(inputs, args.workers)
        if args.part in (None, "encode"):
            encode_table()
        if args.part in (None, "file"):
            file_speedup(big)


def train_table(inputs: dict, workers: int) -> None:
    print(f"## Training, vocab 10,000, {workers} workers/threads each\n")
    print("| input | lmcore s | HF s | time ratio lmcore/HF | lmcore peak MiB | HF peak MiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, path in inputs.items():
        ours = measure("train-lmcore", path, workers)
        hf = measure("train-hf", path, workers)
        print(f"| {name} | {ours['seconds']:.2f} | {hf['seconds']:.2f} | {ours['seconds'] / hf['seconds']:.2f} "
              f"| {ours['peak_mib']:.0f} | {hf['peak_mib']:.0f} |", flush=True)


def encode_table() -> None:
    from lmcore.texts import KINDS

    print("\n## Encoding with GPT-2's ranks, one process, one thread, best of 5 interleaved rounds\n")
    print("cold: a tokenizer built just before (empty pre-token cache); warm: its second pass over the same text\n")
    print("| text | MB | distinct pre-tokens | lmcore cold MB/s | warm | tiktoken | HF cold | HF warm "
          "| cold / tiktoken | cold / HF cold | warm / HF warm |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind in ["tinystories", *KINDS]:
        r = measure("encode", kind, 1)
        print(f"| {kind} | {r['mb']:.1f} | {r['pretokens']:,} | {r['lmcore cold']:.1f} | {r['lmcore warm']:.1f} "
              f"| {r['tiktoken']:.1f} | {r['hf cold']:.1f} | {r['hf warm']:.1f} "
              f"| {r['lmcore cold'] / r['tiktoken']:.2f} | {r['lmcore cold'] / r['hf cold']:.2f} "
              f"| {r['lmcore warm'] / r['hf warm']:.2f} |", flush=True)
    print(f"\n(building lmcore's GPT-2 tokenizer, not in the times above: {r['build_s']:.2f} s)")


def file_speedup(big: Path) -> None:
    one = measure("encode-file", big, 1)
    two = measure("encode-file", big, 2)
    print(f"\n## encode_file on {big.stat().st_size / 1e6:.1f} MB to uint16\n")
    print(f"1 worker {one['mb_s']:.2f} MB/s, 2 workers {two['mb_s']:.2f} MB/s: speed-up {two['mb_s'] / one['mb_s']:.2f}x")


if __name__ == "__main__":
    main()
