"""Out-of-domain texts: every kind made offline, bounded, repeatable, cut at a line end."""

import pytest

from lmcore.texts import KINDS, out_of_domain_text
from lmcore.tokenizer.pretokenize import PRETOKEN_RE


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_is_bounded_repeatable_and_whole_lines(kind):
    text = out_of_domain_text(kind, 100_000)
    assert 50_000 < len(text.encode("utf-8")) <= 100_000
    assert text.endswith("\n")
    assert text == out_of_domain_text(kind, 100_000)
    assert len(set(PRETOKEN_RE.findall(text))) > 1000  # many distinct pre-tokens: what makes it hard for a cache


def test_multilingual_has_its_scripts_and_a_seed():
    text = out_of_domain_text("multilingual", 200_000)
    for probe in ("\u0430", "\u03b1", "\u0627", "\u4e00", "\uac00", "\u0e01"):  # Cyrillic, Greek, Arabic, Han, Hangul, Thai
        lo = ord(probe)
        assert any(lo <= ord(c) < lo + 0x40 for c in text), probe
    assert out_of_domain_text("multilingual", 50_000, seed=1) != out_of_domain_text("multilingual", 50_000, seed=0)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown text kind 'poetry'; choose from docs"):
        out_of_domain_text("poetry")
