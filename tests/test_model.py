import pytest
import torch

from lmcore.model import ModelConfig, TransformerLM

SMALL = dict(vocab_size=97, context_length=24, d_model=32, num_layers=2, num_heads=4, d_ff=None)


def test_state_dict_layout():
    model = TransformerLM(ModelConfig(**SMALL))
    keys = set(model.state_dict())
    expected = {"token_embeddings.weight", "ln_final.weight", "lm_head.weight"}
    for i in range(2):
        names = ["ln1", "attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.output_proj", "ln2", "ffn.w1", "ffn.w2", "ffn.w3"]
        expected |= {f"layers.{i}.{k}.weight" for k in names}
    assert keys == expected


def test_parameter_count_tinystories_config():
    model = TransformerLM(ModelConfig())
    d, ff, v, layers = 512, 1344, 10_000, 4
    per_layer = 4 * d * d + 3 * d * ff + 2 * d
    assert model.num_parameters() == 2 * v * d + layers * per_layer + d
    assert model.num_parameters(non_embedding=True) == layers * per_layer + d


@pytest.mark.parametrize("bad, match", [
    (dict(d_model=30, num_heads=4), "not divisible"),
    (dict(d_model=36, num_heads=4), "even head dimension"),
    (dict(norm="layer"), "norm must be one of"),
    (dict(vocab_size=0), "vocab_size must be a positive"),
])
def test_config_validates(bad, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**{**SMALL, **bad})


def test_config_defaults_ffn_size():
    assert ModelConfig(**{**SMALL, "ffn": "silu"}).d_ff == 128
    assert ModelConfig(**SMALL).d_ff == 128  # 8/3 * 32 rounded up to 64


def test_clear_errors_on_bad_input():
    model = TransformerLM(ModelConfig(**SMALL))
    with pytest.raises(ValueError, match="longer than the model's context_length 24"):
        model(torch.zeros(1, 25, dtype=torch.long))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 97\).*max 97"):
        model(torch.tensor([[1, 97]]))
    with pytest.raises(ValueError, match="integer tensor"):
        model(torch.zeros(1, 3))


@pytest.mark.parametrize("switch", [{}, {"norm": "post"}, {"norm": "none"}, {"position": "none"}, {"ffn": "silu"}])
def test_ablation_switches_run_and_learn(switch):
    torch.manual_seed(0)
    model = TransformerLM(ModelConfig(**{**SMALL, **switch}))
    x = torch.randint(0, 97, (4, 24))
    logits = model(x)
    assert logits.shape == (4, 24, 97) and torch.isfinite(logits).all()
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 97), x[:, 1:].reshape(-1))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    if switch.get("norm") == "none":
        assert not any("ln" in k for k in model.state_dict())


@pytest.mark.parametrize("theta", [0.0, -10.0, float("nan"), float("inf")])
def test_rope_theta_must_be_positive(theta):
    with pytest.raises(ValueError, match="rope_theta must be a positive finite number"):
        ModelConfig(rope_theta=theta)
