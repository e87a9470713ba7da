"""The nn checkers: the reference passes, and each usual mistake fails with the hint that names it.

The wrong implementations are written as a learner would write them; most subclass the reference and
override ``forward`` only, so the parameters (and the check's weights) line up and the mistake is the
one difference.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from lmcore import check
from lmcore import nn as ref
from lmcore.model import TransformerBlock, TransformerLM

REFERENCES = {
    "linear": ref.Linear, "embedding": ref.Embedding, "rmsnorm": ref.RMSNorm, "silu": ref.silu, "swiglu": ref.SwiGLU,
    "softmax": ref.softmax, "scaled_dot_product_attention": ref.scaled_dot_product_attention,
    "rope": ref.RotaryPositionalEmbedding, "multihead_self_attention": ref.MultiHeadSelfAttention,
    "transformer_block": TransformerBlock, "transformer_lm": TransformerLM,
}


def fails_with(name, obj, phrase):
    """The check ``name`` fails ``obj``, and one of its hints holds ``phrase``."""
    report = getattr(check, name)(obj, show=False)
    assert not report, f"{name} passed a wrong implementation"
    assert any(phrase in h for h in report.hints), f"no hint with {phrase!r} in:\n{report}"
    return report


@pytest.mark.parametrize("name", REFERENCES)
def test_the_reference_passes_and_the_global_random_state_is_left_alone(name):
    torch.manual_seed(1)
    before = torch.get_rng_state()
    report = getattr(check, name)(REFERENCES[name], show=False)
    assert report, str(report)
    assert torch.equal(torch.get_rng_state(), before)


def not_written_class(*args, **kwargs):
    raise NotImplementedError


class StubModule(torch.nn.Module):
    def __init__(self, *args, **kwargs):
        super().__init__()
        raise NotImplementedError  # your code here


@pytest.mark.parametrize("name", REFERENCES)
def test_a_stub_is_reported_not_written_in_one_line(name):
    stub = not_written_class if not isinstance(REFERENCES[name], type) else StubModule
    report = getattr(check, name)(stub, show=False)
    assert not report and "not written yet" in str(report) and "\n" not in str(report)


def test_a_stub_with_init_written_but_not_forward_is_not_written():
    class Half(ref.Linear):
        def forward(self, x):
            raise NotImplementedError

    assert "not written yet" in str(check.linear(Half, show=False))


def test_a_wrong_kind_is_told_in_one_line():
    assert "got a class" in str(check.softmax(torch.nn.Softmax, show=False))
    assert "keep the stub's signature" in str(check.softmax(lambda x: x, show=False))
    assert "pass the class itself" in str(check.linear(ref.Linear(2, 3), show=False))


# softmax


def test_softmax_without_the_max_is_told_to_subtract_it():
    def naive(x, dim):
        e = torch.exp(x)
        return e / e.sum(dim=dim, keepdim=True)

    fails_with("softmax", naive, "subtract the max")


def test_softmax_over_the_last_axis_only_is_told_the_axis_is_wrong():
    def last_axis(x, dim):
        x = x - x.amax(-1, keepdim=True)
        return x.exp() / x.exp().sum(-1, keepdim=True)

    fails_with("softmax", last_axis, "wrong dimension")


# Linear and Embedding


class LinearNoTranspose(ref.Linear):
    def forward(self, x):
        return x @ self.weight


class LinearStoredInOut(torch.nn.Module):
    def __init__(self, in_features, out_features, device=None, dtype=None):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(in_features, out_features, device=device, dtype=dtype))

    def forward(self, x):
        return x @ self.weight


class LinearWithBias(ref.Linear):
    def __init__(self, in_features, out_features, device=None, dtype=None):
        super().__init__(in_features, out_features, device, dtype)
        self.bias = torch.nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype))


class LinearNoDtype(torch.nn.Module):
    def __init__(self, in_features, out_features, device=None, dtype=None):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(out_features, in_features))  # forgot device and dtype

    def forward(self, x):
        return x @ self.weight.T


class LinearFunctional(ref.Linear):
    def forward(self, x):
        return F.linear(x, self.weight)


def test_linear_mistakes_get_their_hints():
    fails_with("linear", LinearNoTranspose, "multiply by W.T")
    fails_with("linear", LinearStoredInOut, "multiply by W.T")
    report = fails_with("linear", LinearWithBias, "no bias")
    assert "unexpected bias" in str(report) and len([c for c in report.cases if not c.passed]) == 1
    assert "weight is (3, 5) float32, expected (3, 5) float64" in str(fails_with("linear", LinearNoDtype, "pass dtype"))
    assert check.linear(LinearFunctional, show=False)


def test_a_parameter_named_otherwise_is_one_failed_case_naming_both():
    class Named(torch.nn.Module):
        def __init__(self, in_features, out_features, device=None, dtype=None):
            super().__init__()
            self.W = torch.nn.Parameter(torch.randn(out_features, in_features))

    report = fails_with("linear", Named, "weight, shaped (out_features, in_features)")
    assert len(report.cases) == 1 and "missing weight; unexpected W" in str(report)


class EmbeddingOneHot(ref.Embedding):
    def forward(self, token_ids):
        return F.one_hot(token_ids, self.num_embeddings).to(self.weight.dtype) @ self.weight


class EmbeddingFlat(ref.Embedding):
    def forward(self, token_ids):
        return self.weight[token_ids.reshape(-1)]


class EmbeddingColumns(torch.nn.Module):
    def __init__(self, num_embeddings, embedding_dim, device=None, dtype=None):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(embedding_dim, num_embeddings, device=device, dtype=dtype))

    def forward(self, token_ids):
        return self.weight[:, token_ids].movedim(0, -1)


def test_embedding_one_hot_passes_and_its_mistakes_get_their_hints():
    assert check.embedding(EmbeddingOneHot, show=False)
    fails_with("embedding", EmbeddingFlat, "keep the ids' shape")
    fails_with("embedding", EmbeddingColumns, "row i is token i's vector")


# RMSNorm, SiLU, SwiGLU


def rmsnorm_class(forward):
    return type("MyRMSNorm", (ref.RMSNorm,), {"forward": forward})


def test_rmsnorm_mistakes_get_their_hints():
    wrong_axis = rmsnorm_class(lambda self, x: x / torch.sqrt(x.pow(2).mean(0, keepdim=True) + self.eps) * self.weight)
    no_keepdim = rmsnorm_class(lambda self, x: x / torch.sqrt(x.pow(2).mean(-1) + self.eps) * self.weight)
    no_eps = rmsnorm_class(lambda self, x: x / torch.sqrt(x.pow(2).mean(-1, keepdim=True)) * self.weight)
    eps_outside = rmsnorm_class(lambda self, x: x / (x.pow(2).mean(-1, keepdim=True).sqrt() + self.eps) * self.weight)
    fixed_eps = rmsnorm_class(lambda self, x: x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight)
    no_gain = rmsnorm_class(lambda self, x: x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))
    fails_with("rmsnorm", wrong_axis, "wrong axis")
    fails_with("rmsnorm", no_keepdim, "wrong axis")
    fails_with("rmsnorm", no_eps, "add eps inside the square root")
    fails_with("rmsnorm", eps_outside, "eps goes inside")
    fails_with("rmsnorm", fixed_eps, "the eps the constructor was given")
    fails_with("rmsnorm", no_gain, "learned gain")


def test_silu_mistakes_get_their_hints():
    fails_with("silu", lambda x: torch.sigmoid(x), "multiply the sigmoid by x")
    fails_with("silu", lambda x: x / (1 + torch.exp(x)), "mind the sign")
    assert check.silu(lambda x: x / (1 + torch.exp(-x)), show=False)


def test_swiglu_mistakes_get_their_hints():
    gate_on_w3 = type("MySwiGLU", (ref.SwiGLU,), {"forward": lambda self, x: self.w2(self.w1(x) * ref.silu(self.w3(x)))})
    no_gate = type("MySwiGLU", (ref.SwiGLU,), {"forward": lambda self, x: self.w2(ref.silu(self.w1(x)))})
    fails_with("swiglu", gate_on_w3, "the gate is w1's branch")
    fails_with("swiglu", no_gate, "multiply by w3 x")


# attention


def attention(scale="sqrt", fill=float("-inf"), which="given", softmax_dim=-1, stable=True):
    """A learner's attention, with one thing changed."""
    def sdpa(q, k, v, mask=None):
        d_k = q.shape[-1]
        scores = q @ k.transpose(-2, -1) / {"sqrt": math.sqrt(d_k), "none": 1.0, "d_k": d_k}[scale]
        if mask is not None and which != "ignored":
            if which == "inverted":
                scores = scores.masked_fill(mask, fill)
            elif which == "own":
                scores = scores.masked_fill(~torch.tril(torch.ones_like(mask)), fill)
            else:
                scores = scores.masked_fill(~mask, fill)
        if not stable:
            return torch.exp(scores) / torch.exp(scores).sum(-1, keepdim=True) @ v
        return torch.softmax(scores, dim=softmax_dim) @ v
    return sdpa


def test_attention_written_plainly_passes():
    assert check.scaled_dot_product_attention(attention(), show=False)


@pytest.mark.parametrize("change, phrase", [
    (dict(which="ignored"), "apply the mask"),
    (dict(which="inverted"), "True where a query may attend"),
    (dict(which="own"), "use the mask you are given"),
    (dict(fill=0.0), "-inf, not 0"),
    (dict(scale="none"), "scale the scores by 1 / sqrt(d_k)"),
    (dict(scale="d_k"), "not d_k"),
    (dict(softmax_dim=-2), "over the keys"),
    (dict(stable=False), "exp overflows"),
])
def test_attention_mistakes_get_their_hints(change, phrase):
    fails_with("scaled_dot_product_attention", attention(**change), phrase)


def test_attention_scaled_by_the_width_of_v_is_told_so():
    def by_d_v(q, k, v, mask=None):
        scores = q @ k.transpose(-2, -1) / math.sqrt(v.shape[-1])
        return torch.softmax(scores if mask is None else scores.masked_fill(~mask, float("-inf")), -1) @ v

    fails_with("scaled_dot_product_attention", by_d_v, "not of v")


# RoPE


def rope_class(pairs="adjacent", positions="given", freq_step=2, back="interleave", sign=1.0):
    """A learner's RoPE, computing its angles in forward, with one thing changed."""
    class MyRoPE(torch.nn.Module):
        def __init__(self, theta, d_k, max_seq_len, device=None):
            super().__init__()
            self.theta, self.d_k = theta, d_k

        def forward(self, x, token_positions):
            pos = torch.arange(x.shape[-2]) if positions == "ignored" else token_positions
            k = torch.arange(self.d_k // 2, dtype=torch.float32)
            angle = pos[..., None].float() * self.theta ** (-freq_step * k / self.d_k) * sign
            cos, sin = angle.cos(), angle.sin()
            if pairs == "halves":
                a, b = x[..., : self.d_k // 2], x[..., self.d_k // 2:]
            else:
                a, b = x[..., 0::2], x[..., 1::2]
            ra, rb = a * cos - b * sin, a * sin + b * cos
            if pairs == "halves" or back == "cat":
                return torch.cat([ra, rb], -1).to(x.dtype)
            return torch.stack([ra, rb], -1).flatten(-2).to(x.dtype)
    return MyRoPE


def test_rope_written_plainly_passes():
    assert check.rope(rope_class(), show=False)


@pytest.mark.parametrize("change, phrase", [
    (dict(pairs="halves"), "neighbouring dimensions (2k, 2k+1)"),
    (dict(positions="ignored"), "token_positions given"),
    (dict(freq_step=1), "theta^(-2k/d_k)"),
    (dict(back="cat"), "side by side"),
    (dict(sign=-1.0), "wrong way"),
])
def test_rope_mistakes_get_their_hints(change, phrase):
    fails_with("rope", rope_class(**change), phrase)


def test_rope_with_learned_cos_and_sin_is_told_they_are_buffers():
    class Learned(ref.RotaryPositionalEmbedding):
        def __init__(self, theta, d_k, max_seq_len, device=None):
            super().__init__(theta, d_k, max_seq_len, device)
            self.table = torch.nn.Parameter(torch.zeros(max_seq_len, d_k))

    fails_with("rope", Learned, "buffers")


# multi-head self-attention


def mhsa_class(mask="causal", scale="d_head", rope_v=False, rope=True, positions="given"):
    """A learner's multi-head self-attention, with one thing changed."""
    class MyMHSA(torch.nn.Module):
        def __init__(self, d_model, num_heads, rope=None, device=None, dtype=None):
            super().__init__()
            self.h, self.rope = num_heads, rope
            for name in ("q_proj", "k_proj", "v_proj", "output_proj"):
                setattr(self, name, ref.Linear(d_model, d_model, device, dtype))

        def forward(self, x, token_positions=None):
            *lead, n, d = x.shape
            heads = (p(x).view(*lead, n, self.h, d // self.h).transpose(-3, -2) for p in (self.q_proj, self.k_proj, self.v_proj))
            q, k, v = heads
            if self.rope is not None and rope:
                pos = torch.arange(n) if token_positions is None or positions == "ignored" else token_positions
                pos = pos.unsqueeze(-2) if pos.dim() > 1 else pos
                q, k = self.rope(q, pos), self.rope(k, pos)
                v = self.rope(v, pos) if rope_v else v
            scores = q @ k.transpose(-2, -1) / math.sqrt(d if scale == "d_model" else d // self.h)
            allowed = torch.ones(n, n, dtype=torch.bool).tril()
            if mask == "causal":
                scores = scores.masked_fill(~allowed, float("-inf"))
            elif mask == "inverted":
                scores = scores.masked_fill(allowed, float("-inf"))
            out = torch.softmax(scores, dim=-1) @ v
            return self.output_proj(out.transpose(-3, -2).reshape(*lead, n, d))
    return MyMHSA


def test_multihead_attention_written_plainly_passes():
    assert check.multihead_self_attention(mhsa_class(), show=False)


@pytest.mark.parametrize("change, phrase", [
    (dict(mask="none"), "make it causal"),
    (dict(mask="inverted"), "True where a query may attend"),
    (dict(scale="d_model"), "not sqrt(d_model)"),
    (dict(rope_v=True), "leave the values as they are"),
    (dict(rope=False), "apply the RoPE module"),
    (dict(positions="ignored"), "token_positions given"),
])
def test_multihead_attention_mistakes_get_their_hints(change, phrase):
    fails_with("multihead_self_attention", mhsa_class(**change), phrase)


# the block and the LM


def block_class(forward):
    return type("MyBlock", (TransformerBlock,), {"forward": forward})


def test_block_mistakes_get_their_hints():
    def post_norm(self, x, token_positions=None):
        x = self.ln1(x + self.attn(x, token_positions))
        return self.ln2(x + self.ffn(x))

    def no_residual(self, x, token_positions=None):
        x = self.attn(self.ln1(x), token_positions)
        return self.ffn(self.ln2(x))

    def residual_from_normed(self, x, token_positions=None):
        x = self.ln1(x)
        x = x + self.attn(x, token_positions)
        x = self.ln2(x)
        return x + self.ffn(x)

    def positions_dropped(self, x, token_positions=None):
        x = x + self.attn(self.ln1(x))
        return x + self.ffn(self.ln2(x))

    def norms_swapped(self, x, token_positions=None):
        x = x + self.attn(self.ln2(x), token_positions)
        return x + self.ffn(self.ln1(x))

    fails_with("transformer_block", block_class(post_norm), "pre-norm")
    fails_with("transformer_block", block_class(norms_swapped), "ln1 goes before the attention")
    fails_with("transformer_block", block_class(no_residual), "keep the residual")
    fails_with("transformer_block", block_class(residual_from_normed), "not to its normalised copy")
    fails_with("transformer_block", block_class(positions_dropped), "pass token_positions on")


def lm_class(forward):
    return type("MyLM", (TransformerLM,), {"forward": forward})


def test_lm_mistakes_get_their_hints():
    def blocks(self, ids):
        x = self.token_embeddings(ids)
        for layer in self.layers:
            x = layer(x)
        return x

    fails_with("transformer_lm", lm_class(lambda self, ids: self.lm_head(blocks(self, ids))), "final norm")
    fails_with("transformer_lm", lm_class(lambda self, ids: torch.softmax(self.lm_head(self.ln_final(blocks(self, ids))), -1)),
               "not probabilities")
    assert check.transformer_lm(lm_class(lambda self, ids: self.lm_head(self.ln_final(blocks(self, ids)))), show=False)
