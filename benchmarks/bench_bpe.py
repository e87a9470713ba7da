#!/usr/bin/env python3
"""BPE training and encoding: lmcore against HF tokenizers and tiktoken, one run, one corpus.

    python benchmarks/bench_bpe.py [--workers 2] [--repeat 10]

Training: wall time and peak memory, lmcore vs HF ``tokenizers`` (``BpeTrainer``, byte-level,
same vocab size and special token), on the 2 MiB TinyStories sample and on the sample repeated
``--repeat`` times. Every measurement runs in a fresh process; peak memory is that process's
maximum RSS plus its largest worker's (``getrusage``), so it bounds what the job needed.

Encoding: GPT-2's ranks, one process and one thread, lmcore vs tiktoken vs HF tokenizers, in
MB/s; then ``Tokenizer.encode_file`` with 2 workers vs 1 on the large input (best of 3, each
from an empty pre-token cache).
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


def child(task: str, path: str, workers: int, vocab_size: int) -> dict:
    """One measurement, in this (fresh) process."""
    from lmcore.data import fetch
    from lmcore.tokenizer import GPT2_PATTERN, Tokenizer, train_bpe

    size_mb = os.path.getsize(path) / 1e6
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
        # all three encoders in one process, timed in turn, best of 7 each: machine noise hits all alike
        os.environ["RAYON_NUM_THREADS"] = "1"
        import tiktoken
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import models, pre_tokenizers

        text = Path(path).read_text(encoding="utf-8")
        tok = Tokenizer.from_files(vocab, merges, [EOT])
        first = best_seconds(lambda: tok.encode(text), repeats=1)
        ranks = {b: i for i, b in tok.vocab.items() if i != tok.special_ids[EOT]}
        enc = tiktoken.Encoding("gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: 50256})
        hf = HFTokenizer(models.BPE.from_file(str(vocab), str(merges)))
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.add_special_tokens([EOT])
        runs = {"lmcore": lambda: tok.encode(text), "tiktoken": lambda: enc.encode(text, allowed_special={EOT}),
                "hf": lambda: hf.encode(text)}
        best = {name: float("inf") for name in runs}
        for _ in range(7):
            for name, fn in runs.items():
                best[name] = min(best[name], best_seconds(fn, 1))
        return {"first_pass_mb_s": size_mb / first, **{name: size_mb / t for name, t in best.items()}}
    if task == "encode-file":
        # a fresh tokenizer (empty cache) for each of 3 runs, so 1 and 2 workers both start cold; best of 3
        times = []
        for _ in range(3):
            tok = Tokenizer.from_files(vocab, merges, [EOT])
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                tok.encode_file(path, Path(tmp) / "ids.bin", num_workers=workers)
                times.append(time.perf_counter() - start)
        return {"mb_s": size_mb / min(times)}
    raise ValueError(task)


def measure(task: str, path: Path, workers: int, vocab_size: int = 10_000) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", task, str(path), str(workers), str(vocab_size)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10, help="the large input is the sample repeated this often")
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

        print(f"## Training, vocab 10,000, {args.workers} workers/threads each\n")
        print("| input | lmcore s | HF s | time ratio lmcore/HF | lmcore peak MiB | HF peak MiB |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for name, path in inputs.items():
            ours = measure("train-lmcore", path, args.workers)
            hf = measure("train-hf", path, args.workers)
            print(f"| {name} | {ours['seconds']:.2f} | {hf['seconds']:.2f} | {ours['seconds'] / hf['seconds']:.2f} "
                  f"| {ours['peak_mib']:.0f} | {hf['peak_mib']:.0f} |", flush=True)

        print("\n## Encoding with GPT-2's ranks, one process, one thread (2 MiB sample, best of 7, interleaved)\n")
        enc = measure("encode", sample, 1)
        print("| encoder | MB/s | lmcore / it |")
        print("| --- | ---: | ---: |")
        print(f"| lmcore (first pass, empty cache) | {enc['first_pass_mb_s']:.2f} | |")
        print(f"| lmcore | {enc['lmcore']:.2f} | 1.00 |")
        print(f"| tiktoken | {enc['tiktoken']:.2f} | {enc['lmcore'] / enc['tiktoken']:.2f} |")
        print(f"| HF tokenizers | {enc['hf']:.2f} | {enc['lmcore'] / enc['hf']:.2f} |")

        one = measure("encode-file", big, 1)
        two = measure("encode-file", big, 2)
        print(f"\n## encode_file on {big.stat().st_size / 1e6:.1f} MB to uint16\n")
        print(f"1 worker {one['mb_s']:.2f} MB/s, 2 workers {two['mb_s']:.2f} MB/s: speed-up {two['mb_s'] / one['mb_s']:.2f}x")


if __name__ == "__main__":
    main()
