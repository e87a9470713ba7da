"""Byte-level BPE: training (:func:`train_bpe`) and the tokenizer (:class:`Tokenizer`).

``pretokenize`` cuts text, ``train`` learns merges, ``tokenizer`` applies them, and ``gpt2``
reads and writes GPT-2's file format: the reference, written to be read. ``fast`` holds the
faster versions the defaults use (tiktoken among them, where it gives the same ids), tested equal; ``profiling`` measures them.
"""

from .fast import FastTokenizer, fast_merge_pretokens, fast_pretokenize, tiktoken_can_encode
from .gpt2 import bytes_to_unicode, read_vocab_merges, write_vocab_merges
from .pretokenize import ENDOFTEXT, GPT2_PATTERN, count_pretokens, find_chunk_boundaries, pretokenize
from .profiling import encode_speed, profile_training
from .tokenizer import Tokenizer, load_gpt2
from .train import apply_merge, merge_pretokens, train_bpe

__all__ = [
    "ENDOFTEXT", "GPT2_PATTERN", "FastTokenizer", "Tokenizer", "apply_merge", "bytes_to_unicode", "count_pretokens",
    "encode_speed", "fast_merge_pretokens", "fast_pretokenize", "find_chunk_boundaries", "load_gpt2",
    "merge_pretokens", "pretokenize", "profile_training", "read_vocab_merges", "tiktoken_can_encode", "train_bpe",
    "write_vocab_merges"
]
