"""Byte-level BPE: training (:func:`train_bpe`) and the tokenizer (:class:`Tokenizer`).

``pretokenize`` cuts text, ``train`` learns merges, ``tokenizer`` applies them, and ``gpt2``
reads and writes GPT-2's file format.
"""

from .gpt2 import bytes_to_unicode, read_vocab_merges, write_vocab_merges
from .merge import apply_merge
from .pretokenize import ENDOFTEXT, GPT2_PATTERN, count_pretokens, find_chunk_boundaries
from .tokenizer import Tokenizer, encode_speed, load_gpt2
from .train import merge_pretokens, profile_training, trace_bpe, train_bpe

__all__ = [
    "ENDOFTEXT",
    "GPT2_PATTERN",
    "Tokenizer",
    "apply_merge",
    "bytes_to_unicode",
    "count_pretokens",
    "encode_speed",
    "find_chunk_boundaries",
    "load_gpt2",
    "merge_pretokens",
    "profile_training",
    "read_vocab_merges",
    "trace_bpe",
    "train_bpe",
    "write_vocab_merges",
]
