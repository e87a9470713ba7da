"""Command line: ``python -m lmcore.tokenizer train|encode ...``.

    python -m lmcore.tokenizer train data.txt --vocab-size 10000 --out tok.json
    python -m lmcore.tokenizer encode tok.json data.txt --out data.uint16 --workers 4
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from .fast import FastTokenizer
from .pretokenize import ENDOFTEXT
from .train import train_bpe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmcore.tokenizer", description="Train and apply byte-level BPE.")
    common = argparse.ArgumentParser(add_help=False)  # the options both commands take
    common.add_argument("--workers", type=int, default=os.cpu_count())
    common.add_argument("--errors", choices=("strict", "replace"), default="strict", help="non-UTF-8 bytes: refuse, or U+FFFD")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", parents=[common], help="learn a vocabulary from a UTF-8 text file")
    t.add_argument("input")
    t.add_argument("--vocab-size", type=int, required=True)
    t.add_argument("--special", action="append", default=None, help=f"special token (repeatable; default {ENDOFTEXT})")
    t.add_argument("--out", required=True, help="tokenizer JSON file to write")
    e = sub.add_parser("encode", parents=[common], help="encode a text file to a uint16 array of ids")
    e.add_argument("tokenizer", help="tokenizer JSON file written by 'train'")
    e.add_argument("input")
    e.add_argument("--out", required=True, help="the uint16 id file to write")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    try:
        if args.command == "train":
            specials = args.special if args.special is not None else [ENDOFTEXT]
            vocab, merges = train_bpe(args.input, args.vocab_size, specials, num_workers=args.workers, progress=True,
                                      errors=args.errors)
            FastTokenizer(vocab, merges, specials).save(args.out)
            print(f"{len(vocab)} tokens, {len(merges)} merges -> {args.out} ({time.perf_counter() - start:.1f} s)")
        else:
            tok = FastTokenizer.load(args.tokenizer)
            n = tok.encode_file(args.input, args.out, num_workers=args.workers, progress=True, errors=args.errors)
            print(f"{n:,} tokens -> {args.out} ({time.perf_counter() - start:.1f} s)")
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
