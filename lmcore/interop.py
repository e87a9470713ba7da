"""Moving weights between ``TransformerLM`` and Hugging Face ``LlamaForCausalLM``.

The two models compute the same function: pre-norm RMSNorm blocks, SwiGLU, RoPE, untied LM head,
no biases. Two differences need care. Names differ (``w1`` is Llama's ``gate_proj``, ``w3`` its
``up_proj``, ``w2`` its ``down_proj``). And RoPE pairs differ: we rotate dimensions (2k, 2k+1) of
each head, Llama rotates (k, k + d/2). Reordering the rows of the q and k projections inside each
head, evens first then odds, turns one convention into the other; q.k is unchanged because both
sides are permuted alike.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .model import ModelConfig, TransformerLM

__all__ = ["to_llama_config", "to_llama", "from_llama"]


def to_llama_config(config: ModelConfig):
    """The ``LlamaConfig`` of the same shape; only pre-norm, RoPE, SwiGLU models have one."""
    from transformers import LlamaConfig

    if (config.norm, config.position, config.ffn) != ("pre", "rope", "swiglu"):
        raise ValueError("only pre-norm, RoPE, SwiGLU models map onto Llama")
    return LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.d_model,
        intermediate_size=config.d_ff,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.context_length,
        rms_norm_eps=config.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        hidden_act="silu",
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
    )


def _interleaved_to_halves(w: Tensor, num_heads: int, inverse: bool = False) -> Tensor:
    """Reorder each head's rows from pairs (2k, 2k+1) to halves (k, k + d/2), or back with ``inverse``."""
    d_model, d_in = w.shape
    d_head = d_model // num_heads
    order = torch.cat([torch.arange(0, d_head, 2), torch.arange(1, d_head, 2)])
    if inverse:
        order = torch.argsort(order)
    return w.view(num_heads, d_head, d_in)[:, order].reshape(d_model, d_in)


def _names(i: int) -> dict[str, str]:
    """our key -> Llama key, for layer i."""
    ours, theirs = f"layers.{i}.", f"model.layers.{i}."
    return {
        ours + "ln1.weight": theirs + "input_layernorm.weight",
        ours + "attn.q_proj.weight": theirs + "self_attn.q_proj.weight",
        ours + "attn.k_proj.weight": theirs + "self_attn.k_proj.weight",
        ours + "attn.v_proj.weight": theirs + "self_attn.v_proj.weight",
        ours + "attn.output_proj.weight": theirs + "self_attn.o_proj.weight",
        ours + "ln2.weight": theirs + "post_attention_layernorm.weight",
        ours + "ffn.w1.weight": theirs + "mlp.gate_proj.weight",
        ours + "ffn.w2.weight": theirs + "mlp.down_proj.weight",
        ours + "ffn.w3.weight": theirs + "mlp.up_proj.weight",
    }


def _key_map(config: ModelConfig) -> dict[str, str]:
    keys = {"token_embeddings.weight": "model.embed_tokens.weight", "ln_final.weight": "model.norm.weight",
            "lm_head.weight": "lm_head.weight"}
    for i in range(config.num_layers):
        keys.update(_names(i))
    return keys


def _converted(source: dict[str, Tensor], config: ModelConfig, to_llama: bool) -> dict[str, Tensor]:
    """``source``'s weights under the other model's names, q and k rows reordered for its RoPE."""
    state = {}
    for mine, theirs in _key_map(config).items():
        w = source[mine if to_llama else theirs].detach().clone()
        if mine.endswith(("q_proj.weight", "k_proj.weight")):
            w = _interleaved_to_halves(w, config.num_heads, inverse=not to_llama)
        state[theirs if to_llama else mine] = w
    return state


def to_llama(model: TransformerLM, attn_implementation: str = "eager"):
    """A ``LlamaForCausalLM`` with copies of ``model``'s weights, in their dtype."""
    from transformers import LlamaForCausalLM

    llama = LlamaForCausalLM(to_llama_config(model.config)).to(dtype=next(model.parameters()).dtype)
    llama.config._attn_implementation = attn_implementation
    llama.load_state_dict(_converted(model.state_dict(), model.config, to_llama=True), strict=True)
    return llama.eval()


def _unrepresentable(c) -> list[str]:
    """What in a ``LlamaConfig`` a ``TransformerLM`` cannot compute; empty when the two models agree."""
    found = []
    heads = c.num_attention_heads
    if getattr(c, "num_key_value_heads", heads) != heads:
        found.append(f"num_key_value_heads {c.num_key_value_heads} != num_attention_heads {heads} (grouped-query attention)")
    head_dim = getattr(c, "head_dim", None)
    if head_dim is not None and head_dim != c.hidden_size // heads:
        found.append(f"head_dim {head_dim} != hidden_size / num_attention_heads = {c.hidden_size // heads}")
    if getattr(c, "attention_bias", False):
        found.append("attention_bias=True (lmcore's projections have no bias)")
    if getattr(c, "mlp_bias", False):
        found.append("mlp_bias=True (lmcore's feed-forward has no bias)")
    if getattr(c, "hidden_act", "silu") != "silu":
        found.append(f"hidden_act {c.hidden_act!r} (lmcore's SwiGLU uses silu)")
    rope = dict(getattr(c, "rope_parameters", None) or {})
    scaling = dict(getattr(c, "rope_scaling", None) or {})
    kinds = {rope.get("rope_type", "default"), scaling.get("rope_type", scaling.get("type", "default"))} - {"default"}
    if kinds:
        found.append(f"RoPE scaling {sorted(kinds)[0]!r} (lmcore implements plain RoPE)")
    return found


def from_llama(llama) -> TransformerLM:
    """A ``TransformerLM`` with the weights of a ``LlamaForCausalLM``.

    A config lmcore cannot compute the same way (grouped-query attention, biases, another
    activation, RoPE scaling, another head size) raises ``ValueError`` listing every difference,
    rather than loading weights into a model that would give other logits.
    """
    c = llama.config
    differences = _unrepresentable(c)
    if differences:
        raise ValueError("this Llama config has no lmcore equivalent: " + "; ".join(differences))
    theta = (getattr(c, "rope_parameters", None) or {}).get("rope_theta", getattr(c, "rope_theta", 10_000.0))
    config = ModelConfig(
        vocab_size=c.vocab_size, context_length=c.max_position_embeddings, d_model=c.hidden_size,
        num_layers=c.num_hidden_layers, num_heads=c.num_attention_heads, d_ff=c.intermediate_size,
        rope_theta=float(theta), norm_eps=c.rms_norm_eps,
    )
    model = TransformerLM(config, dtype=next(llama.parameters()).dtype)
    model.load_state_dict(_converted(llama.state_dict(), config, to_llama=False), strict=True)
    return model
