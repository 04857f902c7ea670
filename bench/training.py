"""Training throughput: the previous training path vs the current one, side by side in one process.

Previous path: TRL's prompt-completion batches padded to the longest example, HF's `model(**batch).loss` (logits for every
position, prompt and padding included). Current path: `SFTCollator` packs the micro-batch into one row (position_ids, no
padding; `packed_attention` runs attention per packed example), `response_losses` projects only the trained positions
onto the vocabulary, and `fast_dropout` draws LoRA's dropout masks four to a random word (what `run_sft` does on CPU). Same LoRA model, same examples,
forward + backward per micro-batch, the two paths alternating so a busy machine slows both alike. Also measured in the same
run: the machine's fp32 matmul peak (so each path's share of it), the CPU model and its SIMD flags. Writes bench/training.json.
    python bench/training.py [--steps 4] [--batch 4] [--threads 1]
"""
import argparse, json, os, platform, statistics, time
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parent.parent

def cpu_info() -> dict:
    "CPU model, logical cores, the SIMD flags that matter for fp32/bf16 matmuls, and PyTorch's kernel level."
    model, flags = platform.processor() or "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model: model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags: flags = set(line.split(":", 1)[1].split())
    except OSError: pass
    keep = sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "f16c", "sse4")))
    return {"model": model, "logical_cores": os.cpu_count(),
            "simd_flags": keep, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}

def matmul_peak(n:int=1024, reps:int=8) -> float:
    "Best fp32 GFLOP/s of an n x n matmul with the current thread count (the machine's practical peak)."
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(reps):
        t = time.perf_counter(); a @ b; dt = time.perf_counter() - t
        best = max(best, 2 * n ** 3 / dt / 1e9)
    return best

def examples(tok, n:int, seed:int=0, min_words:int=24, max_words:int=600) -> list[dict]:
    "Demo prompts with responses whose length is log-uniform between `min_words` and `max_words` words: reasoning traces are long-tailed."
    import math, random
    from thinksafe.models import format_example
    from thinksafe.train import tokenize_example
    from thinksafe.synthesize import DEMO_PROMPTS
    rng = random.Random(seed)
    words = ("the user asks something I should answer carefully so let me think about the facts the steps and the safest "
             "helpful reply first the background then the main steps and what to watch out for").split()
    out = []
    for p, _ in DEMO_PROMPTS[:n]:
        k = int(math.exp(rng.uniform(math.log(min_words), math.log(max_words))))
        body = " ".join(words[i % len(words)] for i in range(k))
        resp = "<think>\n" + body[: len(body) * 2 // 3] + "\n</think>\n\n" + body[len(body) * 2 // 3:]
        out.append(tokenize_example(tok, *format_example(tok, p, resp)))
    return out

def run(steps:int=4, batch:int=4, threads:int|None=None, out=ROOT/"bench"/"training.json", verbose:bool=True) -> dict:
    "Tokens per second of forward+backward on the previous and the current training path; returns the result."
    if threads: torch.set_num_threads(threads)
    from peft import get_peft_model
    from thinksafe.config import TrainConfig
    from thinksafe.core import write_json
    from thinksafe.models import load_model
    from thinksafe.train import lora_config, response_losses, reduce_losses, SFTCollator, n_params, packed_attention, fast_dropout
    model, tok = load_model()
    model = get_peft_model(model, lora_config(TrainConfig(target_modules="all-linear"))); model.train()
    exs = examples(tok, steps * batch)
    mbs = [exs[i * batch:(i + 1) * batch] for i in range(steps)]
    padded, packed = SFTCollator(tok.pad_token_id, padding_free=False), SFTCollator(tok.pad_token_id, padding_free=True)
    def previous(mb):
        b = padded(mb)
        model.zero_grad(); loss = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"], use_cache=False).loss
        loss.backward(); return loss.item()
    def current(mb):
        b = packed(mb)
        with packed_attention(model), fast_dropout(model):
            model.zero_grad(); r = response_losses(model, b["input_ids"], b["labels"], position_ids=b["position_ids"], example=b["example"])
            loss = reduce_losses(r, "token"); loss.backward()
        return loss.item()
    previous(mbs[0]); current(mbs[0])                       # warm-up
    peak = matmul_peak()
    times, losses = {"previous": [], "current": []}, {"previous": [], "current": []}
    for mb in mbs:                                          # alternate, so load from other jobs hits both
        for name, fn in (("previous", previous), ("current", current)):
            t = time.perf_counter(); losses[name].append(fn(mb)); times[name].append(time.perf_counter() - t)
    peak = max(peak, matmul_peak())
    real = [sum(len(e["input_ids"]) for e in mb) for mb in mbs]
    padded_tok = [len(mb) * max(len(e["input_ids"]) for e in mb) for mb in mbs]
    N = n_params(model)
    rows = []
    for name in ("previous", "current"):
        s = sum(times[name]); tps = sum(real) / s
        rows.append({"path": name, "loss": {"previous": "padded + HF loss", "current": "packed + ThinkSafe loss"}[name],
                     "s_per_step": round(s / len(mbs), 3), "ratio_vs_hf": round(s / sum(times["previous"]), 2), "s_per_microbatch_median": round(statistics.median(times[name]), 3), "tokens_per_s": round(tps, 1),
                     "gflops_per_s": round(4 * N * tps / 1e9, 2), "share_of_matmul_peak": round(4 * N * tps / 1e9 / peak, 3)})
    res = {"what": "LoRA SFT forward+backward per micro-batch, smollm2-135m fp32, LoRA r=32 all-linear, no gradient checkpointing; responses log-uniform 24-600 words",
           "previous_path": "padded batch + HF model(**batch).loss (full logits)", "current_path": "packed row (position_ids) + attention per packed example + response_losses (logits at trained positions only) + FastDropout",
           "cpu": cpu_info(), "threads": torch.get_num_threads(), "torch": torch.__version__, "n_params": N,
           "micro_batches": steps, "examples_per_microbatch": batch, "real_tokens": sum(real), "padded_tokens": sum(padded_tok),
           "padding_share_previous": round(1 - sum(real) / sum(padded_tok), 3), "matmul_peak_gflops": round(peak, 1),
           "flops_per_token": "4N (LoRA: forward 2N + activation gradients 2N)", "rows": rows,
           "speedup": round(rows[1]["tokens_per_s"] / rows[0]["tokens_per_s"], 2),
           "max_loss_diff": max(abs(a - b) for a, b in zip(losses["previous"], losses["current"])),
           "load_average": [round(x, 2) for x in os.getloadavg()]}
    if verbose:
        print(f"\n{res['cpu']['model']} ({', '.join(res['cpu']['simd_flags'])}), {res['threads']} threads, fp32 matmul peak {peak:.1f} GFLOP/s")
        print(f"{steps} micro-batches x {batch} examples, {sum(real)} real tokens ({res['padding_share_previous']:.0%} padding when padded)")
        print(f"{'path':10s} {'s/micro-batch':>14s} {'tokens/s':>9s} {'GFLOP/s':>8s} {'of peak':>8s}")
        for r in rows: print(f"{r['path']:10s} {r['s_per_microbatch_median']:14.3f} {r['tokens_per_s']:9.1f} {r['gflops_per_s']:8.2f} {r['share_of_matmul_peak']:8.1%}")
        print(f"speed-up {res['speedup']}x; largest loss difference {res['max_loss_diff']:.2e}")
    if out: write_json(out, res)
    return res

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4); ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, all cores)"); ap.add_argument("--out", default=str(ROOT/"bench"/"training.json"))
    a = ap.parse_args(); run(a.steps, a.batch, a.threads, a.out)
