import pytest
import torch

from lmcore.generate import generate, sample_next
from lmcore.model import ModelConfig, TransformerLM


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TransformerLM(ModelConfig(vocab_size=40, context_length=32, d_model=32, num_layers=2, num_heads=4, d_ff=None)).eval()


@pytest.mark.parametrize("temperature, top_p", [(0.0, 1.0), (1.0, 1.0), (0.7, 0.9), (1.5, 0.5)])
def test_cache_gives_the_same_tokens(model, temperature, top_p):
    runs = [generate(model, [1, 2, 3], 20, temperature=temperature, top_p=top_p, use_cache=cache,
                     generator=torch.Generator().manual_seed(5)) for cache in (True, False)]
    assert runs[0] == runs[1] and len(runs[0]) == 20


def test_cached_logits_equal_full_logits(model):
    ids = torch.randint(0, 40, (1, 12))
    full = model(ids)
    cache = model.new_cache()
    steps = [model(ids[:, :5], cache=cache)] + [model(ids[:, i : i + 1], cache=cache) for i in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_stops_at_stop_id_and_context(model):
    greedy = generate(model, [1, 2, 3], 20, temperature=0)
    stop = greedy[4]
    out = generate(model, [1, 2, 3], 20, temperature=0, stop_id=stop)
    assert out[-1] == stop and len(out) == greedy.index(stop) + 1
    assert len(generate(model, list(range(30)), 20, temperature=0)) == 2  # context 32 leaves room for 2
    with pytest.raises(ValueError, match="no room"):
        generate(model, list(range(32)), 5)


def test_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    gen = torch.Generator().manual_seed(0)
    seen = {int(sample_next(logits, 1.0, 0.7, gen)) for _ in range(300)}
    assert seen == {0, 1}  # 0.5 + 0.3 reaches 0.7; 2 and 3 are cut
    assert {int(sample_next(logits, 1.0, 1.0, gen)) for _ in range(500)} == {0, 1, 2, 3}
    with pytest.raises(ValueError):
        sample_next(logits, -1.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prompt": [[1, 2], [3, 4]]}, r"one sequence of ids \(1-D\), got shape \(2, 2\)"),
        ({"prompt": torch.tensor([[1, 2, 3]])}, r"1-D\), got shape \(1, 3\)"),
        ({"prompt": [1.7, 2.2]}, "prompt ids must be integers, got torch.float32"),
        ({"prompt": []}, "at least one token"),
        ({"temperature": float("nan")}, "temperature must be a finite number, got nan"),
        ({"top_p": float("nan")}, "top_p must be a finite number"),
        ({"max_new_tokens": 2.5}, "max_new_tokens must be a non-negative integer, got 2.5"),
        ({"max_new_tokens": "3"}, "max_new_tokens must be a non-negative integer"),
    ],
)
def test_bad_generation_input_is_refused(model, kwargs, message):
    args = {"prompt": [1, 2, 3], "max_new_tokens": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate(model, args.pop("prompt"), args.pop("max_new_tokens"), **args)


def test_prompt_may_be_a_tensor_or_numpy(model):
    import numpy as np

    want = generate(model, [1, 2, 3], 5, temperature=0)
    assert generate(model, torch.tensor([1, 2, 3]), 5, temperature=0) == want
    assert generate(model, np.array([1, 2, 3]), 5, temperature=0) == want


def test_the_model_returns_to_its_mode_even_when_interrupted(model, monkeypatch):
    import lmcore.generate

    model.train()
    try:
        generate(model, [1, 2, 3], 3, temperature=0)
        assert model.training  # back to training mode after generating in eval mode

        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(lmcore.generate, "sample_next", interrupted)
        with pytest.raises(KeyboardInterrupt):
            generate(model, [1, 2, 3], 3)
        assert model.training
    finally:
        model.eval()
