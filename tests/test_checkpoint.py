import pytest
import torch

from lmcore.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from lmcore.model import ModelConfig, TransformerLM
from lmcore.optim import AdamW

CFG = ModelConfig(vocab_size=50, context_length=8, d_model=16, num_layers=1, num_heads=2, d_ff=32)


def test_round_trip_and_atomic_write(tmp_path):
    model = TransformerLM(CFG)
    opt = AdamW(model.parameters())
    model(torch.zeros(1, 4, dtype=torch.long)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "c.pt", model, opt, 7, model_config=CFG.to_dict(), extra={"note": "x"})
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    other, other_opt = TransformerLM(CFG), None
    other_opt = AdamW(other.parameters())
    state = load_checkpoint(tmp_path / "c.pt", other, other_opt, model_config=CFG.to_dict())
    assert state["iteration"] == 7 and state["extra"]["note"] == "x"
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    assert other_opt.state_dict()["state"][0]["step"] == 1


def test_truncated_or_corrupt_is_refused(tmp_path):
    model = TransformerLM(CFG)
    save_checkpoint(tmp_path / "c.pt", model, None, 1, model_config=CFG.to_dict())
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "t.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "t.pt", model)
    (tmp_path / "g.pt").write_bytes(b"garbage" * 100)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "g.pt", model)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "none.pt", model)


def test_config_mismatch_names_the_fields(tmp_path):
    model = TransformerLM(CFG)
    save_checkpoint(tmp_path / "c.pt", model, None, 1, model_config=CFG.to_dict())
    bigger = ModelConfig(**{**CFG.to_dict(), "d_model": 32})
    with pytest.raises(CheckpointError, match="d_model: checkpoint 16 vs model 32"):
        load_checkpoint(tmp_path / "c.pt", TransformerLM(bigger), model_config=bigger.to_dict())


class _Boom:
    """Unpickling this would call os.system: the kind of file a checkpoint loader must refuse."""

    def __reduce__(self):
        import os

        return (os.system, ("touch should-not-exist",))


@pytest.mark.parametrize("case", ["malicious", "truncated", "garbage"])
def test_load_errors_never_suggest_weights_only_false(tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.pt"
    if case == "malicious":
        torch.save({"format": "lmcore-checkpoint", "evil": _Boom()}, path)
    else:
        save_checkpoint(path, TransformerLM(CFG), None, 1, model_config=CFG.to_dict())
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3] if case == "truncated" else b"\x80\x02garbage" * 50)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, TransformerLM(CFG))
    message = str(err.value)
    assert "weights_only" not in message and "Re-running" not in message and "\n" not in message
    assert str(path) in message
    if case == "malicious":
        assert "refused" in message and "never unpickles" in message
    assert not (tmp_path / "should-not-exist").exists()
