#!/usr/bin/env python3
"""One prepared check for a GPU machine: the full-scale training speed, and every chapter on CUDA.

    python benchmarks/gpu_check.py [--steps 300] [--batch 128] [--precision bf16 fp16] [--notebooks] [--out ...]

(a) Trains the 17M TinyStories configuration (``configs/tinystories-17m.yaml``: ``torch.compile``)
    for ``--steps`` steps in each ``--precision`` (on a GPU, by default bf16 autocast and fp16
    autocast with a gradient scaler, the path a T4 or V100 takes) on token ids made from the 2 MiB
    TinyStories sample (the GPU machine reaches no network; the sample travels in the data cache),
    and reports tokens/s after compilation, MFU against the GPU's peak for that dtype
    (``lmcore.accounting``), peak memory, and what the full 327,680,000-token run would take.
(b) With ``--notebooks``, executes every chapter on the CUDA kernel and reports errors and seconds.

Writes ``gpu-<device>.json`` into ``--out``, which chapter 6 can show, labelled with the GPU. On a
CPU it runs too (for a smoke test with ``--steps 3``) and says that MFU is not defined there.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

import lmcore
from lmcore.accounting import peak_flops, training_flops_per_token
from lmcore.dataset import prepare_dataset
from lmcore.tokenizer import ENDOFTEXT, Tokenizer, train_bpe
from lmcore.train import load_config, train

ROOT = Path(__file__).resolve().parent.parent
FULL_TOKENS = 327_680_000


def training_speed(steps: int, batch: int, precision: str, work: Path) -> dict:
    sample = lmcore.fetch("tinystories-sample")
    vocab, merges = train_bpe(sample, 10_000, [ENDOFTEXT])
    paths = prepare_dataset(Tokenizer(vocab, merges, [ENDOFTEXT]), sample, work / "data")
    device = lmcore.pick_device()
    config = load_config(ROOT / "configs" / "tinystories-17m.yaml", [
        f"train_path={paths['train']}", f"valid_path={paths['valid']}", f"out_dir={work / 'run'}", f"max_steps={steps}",
        f"batch_size={batch}", f"warmup_steps={max(1, steps // 10)}", f"eval_every={steps}", "eval_batches=2",
        f"log_every={max(1, steps // 10)}", f"checkpoint_every={steps}", f"compile={device.type == 'cuda'}", "progress=false",
        f"precision={precision}",
    ])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    history = train(config)
    total = time.perf_counter() - start
    # speed after compilation: from the first record (a tenth into the run) to the last, which is
    # stamped before its evaluation
    first, last = history[0], history[-1]
    seconds = last["wall_s"] - first["wall_s"]
    tokens_per_s = (last["tokens"] - first["tokens"]) / seconds
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "precision": precision, "steps": steps, "batch_size": batch,
        "context": config.model.context_length,
        "parameters": lmcore.TransformerLM(config.model).num_parameters(), "seconds_total": round(total, 1),
        "tokens_per_s": round(tokens_per_s), "final_train_loss": round(history[-1]["train_loss"], 3),
        "full_run_minutes": round(FULL_TOKENS / tokens_per_s / 60, 1),
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        dtype = "fp32" if precision == "fp32" else precision
        result["mfu"] = round(tokens_per_s * training_flops_per_token(config.model) / peak_flops(result["device"], dtype), 4)
    else:
        result["mfu"] = None  # no GPU peak to divide by: MFU is not defined on a CPU
    return result


def notebooks() -> dict:
    import nbformat
    from nbclient import NotebookClient

    out = {}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        try:
            NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
            error = None
        except Exception as e:  # a chapter that fails is reported, and the others still run
            error = f"{type(e).__name__}: {str(e).splitlines()[-1] if str(e) else ''}"[:500]
        out[path.stem] = {"seconds": round(time.perf_counter() - start, 1), "error": error}
        print(path.stem, out[path.stem], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--precision", nargs="+", choices=["bf16", "fp16", "fp32"], default=None,
                        help="precisions to time (default: bf16 and fp16 on a GPU, fp32 on a CPU)")
    parser.add_argument("--notebooks", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    precisions = args.precision or (["bf16", "fp16"] if torch.cuda.is_available() else ["fp32"])
    result = {"training": []}
    for precision in precisions:
        with tempfile.TemporaryDirectory() as tmp:
            result["training"].append(training_speed(args.steps, args.batch, precision, Path(tmp)))
        print(json.dumps(result["training"][-1], indent=1), flush=True)
    if args.notebooks:
        result["notebooks"] = notebooks()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "".join(ch if ch.isalnum() else "-" for ch in result["training"][0]["device"]).strip("-").lower()
    (out / f"gpu-{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out / f'gpu-{name}.json'}")


if __name__ == "__main__":
    main()
