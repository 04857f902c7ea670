"""Generation throughput: the batched `thinksafe.generate.HFGenerator` (length-sorted left-padded batches, KV cache,
top-k-then-top-p sampling) against a naive loop that calls `model.generate` on one prompt at a time, on the same
prompts (GSM8K questions and AdvBench requests), the same model (embedded SmolLM2-135M-Instruct), the same sampling
settings, in the same process. Tokens are the generated tokens up to (not including) the end-of-turn token.

    python -m bench.generation [--n-prompts 16] [--max-new-tokens 64]

Writes bench/generation.json (atomically).
"""
from __future__ import annotations
import argparse, csv, json, os, platform, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "generation.json"


def bench_prompts(n:int=16, harmful_every:int=4) -> list[str]:
    "`n` real prompts: GSM8K test questions, with every `harmful_every`-th an AdvBench request."
    gsm = [json.loads(l)["question"] for l in open(DATA / "gsm8k" / "test.jsonl", encoding="utf-8")]
    with open(DATA / "advbench" / "harmful_behaviors.csv", encoding="utf-8", newline="") as f: adv = [r["goal"] for r in csv.DictReader(f)]
    out, g, a = [], iter(gsm), iter(adv)
    for i in range(n): out.append(next(a) if i % harmful_every == harmful_every - 1 else next(g))
    return out


def naive_generate(model, tok, texts:list[str], sc, stops:list[int], pad_id:int) -> int:
    "One `model.generate` call per prompt with transformers' own samplers; returns the number of generated tokens."
    import torch
    n = 0
    with torch.inference_mode():
        for i, text in enumerate(texts):
            torch.manual_seed(sc.seed + i)
            x = tok([text], return_tensors="pt", add_special_tokens=False)
            y = model.generate(**x, do_sample=True, temperature=sc.temperature, top_p=sc.top_p, top_k=sc.top_k,
                               max_new_tokens=sc.max_new_tokens, eos_token_id=stops, pad_token_id=pad_id)
            new = y[0, x["input_ids"].shape[1]:].tolist()
            n += next((k for k, t in enumerate(new) if t in stops), len(new))
    return n


def run(n_prompts:int=16, max_new_tokens:int=64, out:Path|str|None=OUT, verbose:bool=True) -> dict:
    "Time both paths on `n_prompts` prompts x `max_new_tokens`; print a table; write the JSON; return the results."
    import torch, transformers
    from thinksafe.core import SamplingConfig, write_json
    from thinksafe.models import load_model
    from thinksafe.generate import HFGenerator, as_samples
    model, tok = load_model("smollm2-135m", device="cpu")
    sc = SamplingConfig(n=1, temperature=0.6, top_p=0.95, top_k=20, max_new_tokens=max_new_tokens, seed=0, batch_size=n_prompts)
    # close_think=False: no budget forcing (a second generate call per batch), so both paths do the same work
    gen = HFGenerator(model, tok, sampling=sc, progress=False, close_think=False)
    prompts = bench_prompts(n_prompts)
    texts = [gen.prompt_text(s) for s in as_samples(prompts)]           # the very prompt text the batched path sends
    gen.generate(prompts[:2], sampling=SamplingConfig(max_new_tokens=4, batch_size=2), desc="warm-up")   # one-time costs
    load0 = os.getloadavg()[0]
    t, c = time.perf_counter(), time.process_time()
    naive_tokens = naive_generate(model, tok, texts, sc, gen.stops, gen.pad_id)
    naive_s, naive_cpu = time.perf_counter() - t, time.process_time() - c
    t, c = time.perf_counter(), time.process_time()
    samples = gen.generate(prompts, sampling=sc, desc="batched")
    batched_s, batched_cpu = time.perf_counter() - t, time.process_time() - c
    batched_tokens = sum(s.meta.get("new_tokens", 0) for s in samples)
    res = {"model": "smollm2-135m (SmolLM2-135M-Instruct, fp32, CPU)", "n_prompts": n_prompts, "max_new_tokens": max_new_tokens,
           "sampling": {"temperature": sc.temperature, "top_p": sc.top_p, "top_k": sc.top_k, "batch_size": sc.batch_size},
           "naive": {"tokens": naive_tokens, "seconds": round(naive_s, 2), "tokens_per_s": round(naive_tokens / naive_s, 2),
                     "cpu_seconds": round(naive_cpu, 2)},
           "batched": {"tokens": batched_tokens, "seconds": round(batched_s, 2), "tokens_per_s": round(batched_tokens / batched_s, 2),
                       "cpu_seconds": round(batched_cpu, 2)},
           "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "loadavg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
           "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
           "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    res["speedup"] = round(res["batched"]["tokens_per_s"] / res["naive"]["tokens_per_s"], 2)
    # CPU seconds per token: less sensitive than wall time to other processes sharing the cores
    res["speedup_cpu_time"] = round((naive_cpu / max(naive_tokens, 1)) / (batched_cpu / max(batched_tokens, 1)), 2)
    if verbose:
        print(f"generation: {n_prompts} prompts x {max_new_tokens} new tokens, {res['model']}, {res['torch_threads']} threads")
        print(f"{'path':<34}{'tokens':>8}{'seconds':>10}{'tokens/s':>10}")
        print(f"{'naive model.generate, 1 prompt':<34}{naive_tokens:>8}{naive_s:>10.1f}{res['naive']['tokens_per_s']:>10.1f}")
        print(f"{'HFGenerator, batched':<34}{batched_tokens:>8}{batched_s:>10.1f}{res['batched']['tokens_per_s']:>10.1f}")
        print(f"speedup (tokens/s ratio): {res['speedup']:.2f}x wall-clock, {res['speedup_cpu_time']:.2f}x per CPU-second"
              f"   (1-min load average {res['loadavg_1min'][0]} -> {res['loadavg_1min'][1]} on {res['cpu_count']} cores)")
    if out: write_json(out, res)
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args()
    run(a.n_prompts, a.max_new_tokens, a.out)
