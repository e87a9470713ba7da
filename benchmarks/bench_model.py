#!/usr/bin/env python3
"""Training-step speed: lmcore's TransformerLM against Hugging Face's LlamaForCausalLM, same shape.

    python benchmarks/bench_model.py [--steps 5] [--batch 8]

The TinyStories config (vocab 10,000, context 256, d_model 512, d_ff 1,344, 4 layers, 16 heads,
theta 10,000). One step is forward, cross-entropy, backward and zeroing the gradients; steps run
alternately for the two models (swapping who goes first) so both see the same machine load; medians.
On CPU: float32, lmcore with the fused attention path vs Llama with its default (sdpa) attention.
On a CUDA GPU, in addition: bf16 autocast with and without ``torch.compile``, tokens/s and MFU
against the GPU's dense bf16 peak (lmcore.accounting's table; FLOPs = 6 N per token plus attention).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from lmcore.interop import to_llama
from lmcore.model import ModelConfig, TransformerLM


def step_fn(model, batch, hf: bool, autocast: bool):
    x, y = batch

    def step():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(x).logits if hf else model(x)
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.view(-1))
        loss.backward()
        for p in model.parameters():
            p.grad = None
        if x.device.type == "cuda":
            torch.cuda.synchronize()

    return step


def timed(step, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = ModelConfig(attention="fused")
    tokens = args.batch * config.context_length

    def compare(device: torch.device, dtype_note: str, autocast: bool, compile_: bool) -> tuple[float, float]:
        ours = TransformerLM(config, device=device)
        llama = to_llama(TransformerLM(config), attn_implementation="sdpa").to(device).train()
        if compile_:
            ours, llama = torch.compile(ours), torch.compile(llama)
        x = torch.randint(0, config.vocab_size, (args.batch, config.context_length), device=device)
        batch = (x, torch.roll(x, -1, dims=1))
        a, b = step_fn(ours, batch, False, autocast), step_fn(llama, batch, True, autocast)
        for _ in range(3 if compile_ else 1):  # warm-up (and compilation)
            a(), b()
        ta, tb = [], []
        for i in range(args.steps):  # alternate, and alternate who goes first
            if i % 2:
                tb += timed(b, 1)
                ta += timed(a, 1)
            else:
                ta += timed(a, 1)
                tb += timed(b, 1)
        sa, sb = statistics.median(ta), statistics.median(tb)
        print(f"| {device.type} {dtype_note}{' compiled' if compile_ else ''} | {1 / sa:.3f} | {1 / sb:.3f} "
              f"| {sa / sb:.2f} | {tokens / sa:,.0f} | {tokens / sb:,.0f} |", flush=True)
        return sa, sb

    print(f"TinyStories config, batch {args.batch} x {config.context_length} tokens, "
          f"{TransformerLM(config).num_parameters():,} parameters, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads\n")
    print("| device | lmcore steps/s | Llama steps/s | time ratio lmcore/Llama | lmcore tokens/s | Llama tokens/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    compare(torch.device("cpu"), "float32", autocast=False, compile_=False)
    if torch.cuda.is_available():
        from lmcore.accounting import mfu, training_flops_per_token

        dev = torch.device("cuda")
        name = torch.cuda.get_device_name()
        results = {c: compare(dev, "bf16", autocast=True, compile_=c) for c in (False, True)}
        per_token = training_flops_per_token(config)
        for c, (sa, _) in results.items():
            print(f"\n{name} bf16{' compiled' if c else ''}: lmcore {tokens / sa:,.0f} tokens/s, "
                  f"MFU {mfu(per_token * tokens / sa, name):.1%}")


if __name__ == "__main__":
    main()
