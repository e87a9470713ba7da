"""lmcore: the library behind the book "a small language model from scratch".

One module a concept, in the order the book meets them:

- :mod:`lmcore.data`: named data files, downloaded once and checked.
- :mod:`lmcore.unicode`: what encodings cost, and how UTF-8 marks character lengths.
- :mod:`lmcore.tokenizer`: byte-level BPE training and the tokenizer.
- :mod:`lmcore.device`: device choice and repeatable runs.
"""

from . import data, unicode
from .data import DataError, fetch
from .device import pick_device, set_determinism
from .tokenizer import Tokenizer, load_gpt2, train_bpe

__all__ = [
    "DataError",
    "Tokenizer",
    "data",
    "fetch",
    "load_gpt2",
    "pick_device",
    "set_determinism",
    "train_bpe",
    "unicode",
]
__version__ = "0.1.0"
