#!/usr/bin/env python3
"""Training-step speed: lmcore's ``train()`` step against what a user would otherwise write.

    python benchmarks/bench_train.py [--shapes ch6,17m] [--rounds 5] [--threads 2] [--profile]

Three contenders, each a whole optimizer step (sample a batch, forward, loss, backward, clip the
gradient norm to 1, AdamW update, zero the gradients), timed interleaved in one process (a
round runs each contender in turn, the order rotating), median of ``--rounds`` rounds:

- **lmcore**: the step of ``lmcore.train`` itself (``TransformerLM``, its loss and AdamW, as
  ``train()`` runs them with ``TrainConfig.kernels``, fused by default here);
- **HF Llama**: ``transformers.LlamaForCausalLM`` of the same shape (sdpa attention) with
  ``F.cross_entropy``, ``torch.nn.utils.clip_grad_norm_`` and ``torch.optim.AdamW(fused=True)``;
- **nanoGPT**: a nanoGPT-style GPT (LayerNorm, GELU MLP of 4 d, learned positions, tied
  embeddings, sdpa) of the same width, depth and heads, with the same loss and optimizer.

Shapes: ``ch6`` is chapter 6's model (vocab 10,000, context 128, d 128, 4 layers, 4 heads,
d_ff 384, batch 16); ``17m`` the full-scale TinyStories model (vocab 10,000, context 256,
d 512, 4 layers, 16 heads, d_ff 1,344; batch 8 on a CPU). Prints tokens/s and each ratio to
lmcore, and lmcore's model FLOP/s (tokens/s times ``training_flops_per_token``) against this CPU's
float32 matmul rate measured in the same run (``lmcore.device.matmul_flops_per_second``): the
share of a step's time that runs as products at full speed. ``--profile`` prints the top
operations of lmcore's step (self CPU time).

This replaces ``bench_model.py``, which timed forward + loss + backward only: the optimizer,
clipping and per-step Python work are part of what a training run pays.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lmcore.accounting import training_flops_per_token
from lmcore.dataset import get_batch
from lmcore.device import matmul_flops_per_second
from lmcore.model import ModelConfig
from lmcore.tokenfile import save_tokens
from lmcore.train import TrainConfig, _Run

SHAPES = {
    "ch6": (dict(vocab_size=10_000, context_length=128, d_model=128, num_layers=4, num_heads=4, d_ff=384), 16),
    "17m": (dict(vocab_size=10_000, context_length=256, d_model=512, num_layers=4, num_heads=16, d_ff=1_344), 8),
}


class NanoBlock(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
        self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.fc, self.out = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)
        self.heads = heads

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class NanoGPT(nn.Module):
    """nanoGPT's model.py in brief: the baseline a reader of that repository would write."""

    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(c.vocab_size, c.d_model), nn.Embedding(c.context_length, c.d_model)
        self.blocks = nn.ModuleList(NanoBlock(c.d_model, c.num_heads) for _ in range(c.num_layers))
        self.ln_f = nn.LayerNorm(c.d_model, bias=False)
        self.head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def torch_step(model, tokens, batch: int, context: int, gen: torch.Generator, hf: bool):
    """One step the way the PyTorch documentation writes it."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, fused=True)

    def step():
        x, y = get_batch(tokens, batch, context, "cpu", gen)
        logits = model(x).logits if hf else model(x)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


def contenders(shape: str, workdir: Path, kernels: str) -> dict:
    model_kwargs, batch = SHAPES[shape]
    c = ModelConfig(**model_kwargs)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, c.vocab_size, 400_000)
    path = save_tokens(workdir / f"{shape}.uint16", ids, c.vocab_size)
    config = TrainConfig(train_path=str(path), out_dir=str(workdir / f"run-{shape}-{kernels}"), model=c, kernels=kernels,
                         batch_size=batch,
                         max_steps=10**9, warmup_steps=10, device="cpu", progress=False, overwrite=True)
    torch.manual_seed(0)
    run = _Run(config)
    run.resume_or_start()

    from transformers import LlamaForCausalLM

    from lmcore.interop import to_llama_config

    llama_cfg = to_llama_config(ModelConfig(**model_kwargs))
    llama_cfg._attn_implementation = "sdpa"
    llama = LlamaForCausalLM(llama_cfg).train()
    nano = NanoGPT(c).train()
    tokens = run.train_tokens
    return {
        f"lmcore ({kernels})": run.step,
        "HF Llama": torch_step(llama, tokens, batch, c.context_length, torch.Generator().manual_seed(1), hf=True),
        "nanoGPT": torch_step(nano, tokens, batch, c.context_length, torch.Generator().manual_seed(2), hf=False),
    }, batch * c.context_length, run


def profile(run, steps: int = 3) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            run.step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10, max_name_column_width=40))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="ch6,17m")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per contender per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kernels", default="fused", choices=("fused", "math"))
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} CPU threads, "
          f"median of {args.rounds} interleaved rounds x {args.steps} steps\n")
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            steps, tokens_per_step, run = contenders(shape, Path(tmp), args.kernels)
            for fn in steps.values():  # warm-up
                fn()
            times: dict[str, list[float]] = {name: [] for name in steps}
            names = list(steps)
            for r in range(args.rounds):
                for name in names[r % len(names):] + names[: r % len(names)]:
                    t = time.perf_counter()
                    for _ in range(args.steps):
                        steps[name]()
                    times[name].append((time.perf_counter() - t) / args.steps)
            rate = {name: tokens_per_step / statistics.median(ts) for name, ts in times.items()}
            ours = rate[names[0]]
            best = max(v for k, v in rate.items() if k != names[0])
            print(f"## shape {shape}: {run.model.num_parameters():,} parameters, {tokens_per_step:,} tokens a step\n")
            print("| contender | tokens/s | lmcore / this |")
            print("| --- | ---: | ---: |")
            for name, v in rate.items():
                print(f"| {name} | {v:,.0f} | {ours / v:.2f} |")
            print(f"\nlmcore / best baseline: **{ours / best:.2f}x**\n")
            model_flops = ours * training_flops_per_token(run.config.model)
            matmul = matmul_flops_per_second("cpu")  # measured here, between the rounds' timings
            print(f"lmcore's model FLOP/s: {model_flops / 1e9:.1f} G = **{model_flops / matmul:.0%}** of this CPU's "
                  f"float32 matmul rate, measured now ({matmul / 1e9:.0f} GFLOP/s on 1,024 x 1,024 products)\n")
            if args.profile:
                profile(run)
            assert math.isfinite(ours)


if __name__ == "__main__":
    main()
