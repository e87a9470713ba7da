"""Parity with Hugging Face's LlamaForCausalLM, a model no one here wrote."""

import pytest
import torch

from lmcore.model import ModelConfig, TransformerLM

transformers = pytest.importorskip("transformers")
from lmcore.interop import from_llama, to_llama  # noqa: E402

CONFIGS = [
    ModelConfig(vocab_size=101, context_length=32, d_model=64, num_layers=2, num_heads=4, d_ff=None),
    ModelConfig(vocab_size=300, context_length=48, d_model=96, num_layers=3, num_heads=3, d_ff=200, rope_theta=500.0),
    ModelConfig(vocab_size=50, context_length=16, d_model=32, num_layers=1, num_heads=8, d_ff=64),
]


@pytest.mark.parametrize("config", CONFIGS, ids=["4-heads", "3-heads-theta500", "8-heads"])
def test_logits_equal_llama(config):
    torch.manual_seed(0)
    model = TransformerLM(config).eval()
    llama = to_llama(model)
    for seq in (1, 5, config.context_length):
        x = torch.randint(0, config.vocab_size, (2, seq))
        with torch.no_grad():
            torch.testing.assert_close(model(x), llama(x).logits, atol=1e-5, rtol=0)
    back = from_llama(llama)
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def test_exported_directory_loads_and_generates(tmp_path):
    torch.manual_seed(0)
    model = TransformerLM(CONFIGS[0]).eval()
    to_llama(model).save_pretrained(tmp_path)
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    x = torch.randint(0, 101, (1, 6))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x), atol=1e-5, rtol=0)
    out = loaded.generate(x, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 11)
    # greedy continuation equals ours
    ids = x
    for _ in range(5):
        with torch.no_grad():
            ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, ids)


def test_only_llama_shaped_models_convert():
    with pytest.raises(ValueError, match="only pre-norm"):
        to_llama(TransformerLM(ModelConfig(vocab_size=10, context_length=8, d_model=16, num_layers=1, num_heads=2,
                                           norm="post")))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"attention_bias": True}, "attention_bias=True"),
        ({"mlp_bias": True}, "mlp_bias=True"),
        ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
        ({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10_000.0}}, "RoPE scaling 'linear'"),
        ({"num_key_value_heads": 2}, "grouped-query attention"),
        ({"head_dim": 16}, "head_dim 16"),
    ],
)
def test_from_llama_refuses_what_lmcore_cannot_represent(change, message):
    from transformers import LlamaConfig, LlamaForCausalLM

    base = dict(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                num_key_value_heads=4, max_position_embeddings=16)
    llama = LlamaForCausalLM(LlamaConfig(**{**base, **change}))
    with pytest.raises(ValueError, match=r"no lmcore equivalent: .*" + message):
        from_llama(llama)
    two = LlamaForCausalLM(LlamaConfig(**{**base, "attention_bias": True, "hidden_act": "relu"}))
    with pytest.raises(ValueError, match=r"attention_bias=True .*; hidden_act 'relu'"):
        from_llama(two)
