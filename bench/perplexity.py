"""Speed of dataset perplexity scoring: `thinksafe.divergence` (length-bucketed batches, output layer on response
positions only, chunked logsumexp) against a naive per-record loop (full logits, full log-softmax) and HF
`evaluate`-style padded batching (fixed batch size, right-padded to the longest, full [B,T,V] log-softmax), on the same
records (a STAR-1 slice plus shorter self-generated-like records) and the same model (embedded SmolLM2-135M-Instruct).
Each is run in fp32 (the CPU default); ours and the naive loop also with the model loaded in bf16
(`dtype="bfloat16"`), with how far bf16 moves the numbers from the fp32 naive loop.

    python -m bench.perplexity [--n-star 4] [--n-self 12] [--max-length 640] [--threads 2]
"""
from __future__ import annotations
import argparse, json, os, random, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def make_records(n_star:int=8, n_self:int=16, seed:int=0):
    "A STAR-1 slice (long R1 traces) plus `n_self` self-generated-like records: short refusals of varied length."
    from thinksafe.divergence import load_records
    from thinksafe.records import Sample
    star = load_records(DATA / "star1" / "STAR-1.json", limit=n_star + n_self)
    rng = random.Random(seed)
    selfish = []
    for s in star[n_star:n_star + n_self]:
        words = s.thinking.split()
        k = rng.randint(15, min(len(words), 160))
        text = "<think>\n" + " ".join(words[:k]) + "\n</think>\n\nI can't help with that request."
        selfish.append(Sample(s.prompt, s.label, text, meta={"source": "self-like"}))
    recs = star[:n_star] + selfish
    rng.shuffle(recs)          # a dataset mixes lengths; evaluate-style batching takes records in file order
    return recs


def padded_batch_logprobs(model, encoded, batch_size:int=8):
    "HF `evaluate`-style: fixed batch size in the given order, right-padded to the longest, full log-softmax."
    import torch
    out = []
    with torch.no_grad():
        for b in range(0, len(encoded), batch_size):
            batch = encoded[b:b + batch_size]
            T = max(len(e["ids"]) for e in batch)
            x = torch.zeros(len(batch), T, dtype=torch.long)
            att = torch.zeros_like(x)
            for r, e in enumerate(batch):
                x[r, :len(e["ids"])] = torch.tensor(e["ids"])
                att[r, :len(e["ids"])] = 1
            logp = model(input_ids=x, attention_mask=att).logits.float().log_softmax(-1)      # [B, T, V]
            tok_lp = logp[:, :-1].gather(-1, x[:, 1:, None])[..., 0]
            for r, e in enumerate(batch): out.append(tok_lp[r, e["n_prompt"] - 1:len(e["ids"]) - 1].numpy())
    return out


def run(n_star:int=4, n_self:int=12, max_length:int=640, batch_tokens:int|None=None, padded_batch_size:int=8,
        threads:int|None=2, repeats:int=2, out:str|Path|None=ROOT / "bench" / "perplexity.json",
        verbose:bool=True) -> dict:
    "Time the three scorers on the same records; returns (and writes) tokens/s, ratios and agreement."
    import numpy as np, torch
    from thinksafe.models import load_model, think_format
    from thinksafe.divergence import (encode_record, response_logprobs, naive_response_logprobs, nll_stats,
                                      cpu_bf16_fast)
    if threads: torch.set_num_threads(threads)
    model, tok = load_model("smollm2-135m", device="cpu")
    model16, _ = load_model("smollm2-135m", device="cpu", dtype="bfloat16")
    fmt = think_format(tok)
    recs = make_records(n_star, n_self)
    enc = [encode_record(tok, s, fmt, max_length) for s in recs]
    n_tok = sum(len(e["ids"]) for e in enc)
    n_resp = sum(len(e["ids"]) - e["n_prompt"] for e in enc)
    with torch.inference_mode():                                # warm-up (oneDNN picks kernels)
        for m in (model, model16): m(input_ids=torch.tensor([enc[0]["ids"][:300]]))
    methods = {"thinksafe": lambda: response_logprobs(model, enc, batch_tokens, progress=False)[0],   # device defaults
               "thinksafe_batched_prefix": lambda: response_logprobs(model, enc, 4096, progress=False,
                                                                     reuse_prefix=True)[0],
               "naive_loop": lambda: naive_response_logprobs(model, enc),
               "padded_batches": lambda: padded_batch_logprobs(model, enc, padded_batch_size),
               "thinksafe_bf16": lambda: response_logprobs(model16, enc, batch_tokens, progress=False)[0],
               "naive_loop_bf16": lambda: naive_response_logprobs(model16, enc)}
    res, lps, times = {}, {}, {n: [] for n in methods}
    for rep in range(repeats):          # round-robin repeats, best time kept: robust to load from other processes
        for name, f in methods.items():
            t = time.perf_counter()
            lps[name] = f()
            times[name].append(time.perf_counter() - t)
            if verbose:
                print(f"[{rep}] {name:26s} {times[name][-1]:7.1f} s  (load avg {os.getloadavg()[0]:.1f})", flush=True)
    for name in methods:
        dt = min(times[name])
        res[name] = {"seconds": dt, "all_seconds": times[name], "tokens_per_s": n_tok / dt,
                     "response_tokens_per_s": n_resp / dt}
        if verbose:
            print(f"{name:26s} {dt:7.1f} s  {n_tok / dt:7.1f} tok/s  ({n_resp / dt:.1f} response tok/s)", flush=True)
    ref = lps["naive_loop"]
    ref_nll = -np.concatenate(ref).mean()
    for name in methods:
        res[name]["max_abs_diff_vs_naive"] = float(max(np.abs(a - b).max() for a, b in zip(lps[name], ref)))
        res[name]["max_record_mean_nll_diff"] = float(max(abs(a.mean() - b.mean()) for a, b in zip(lps[name], ref)))
        res[name]["dataset_nll_diff"] = float(abs(-np.concatenate(lps[name]).mean() - ref_nll))
        res[name]["speedup_vs_naive"] = res["naive_loop"]["seconds"] / res[name]["seconds"]
        res[name]["speedup_vs_padded"] = res["padded_batches"]["seconds"] / res[name]["seconds"]
    lengths = [len(e["ids"]) for e in enc]
    chunks = [lengths[b:b + padded_batch_size] for b in range(0, len(lengths), padded_batch_size)]
    padded = sum(max(c) * len(c) for c in chunks)
    rows = [{"nll_sum": float(-r.sum()), "n_tokens": len(r)} for r in ref]
    ci = nll_stats(rows, 1000)["nll_ci"]
    result = {"model": "smollm2-135m", "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "repeats": repeats, "cpu_bf16_hardware": cpu_bf16_fast(), "dataset_nll_fp32": float(ref_nll),
              "dataset_nll_ci95_halfwidth": (ci[1] - ci[0]) / 2, "load_avg_after": os.getloadavg()[0],
              "records": len(enc), "n_star": n_star, "n_self_like": n_self, "max_length": max_length, "tokens": n_tok,
              "response_tokens": n_resp, "length_min_max": [min(lengths), max(lengths)], "batch_tokens": batch_tokens,
              "padded_batch_size": padded_batch_size, "padded_batches_padding": 1 - n_tok / padded, "methods": res}
    if verbose:
        t, b = res["thinksafe"], res["thinksafe_bf16"]
        print(f"speed-up of thinksafe: {t['speedup_vs_naive']:.2f}x vs naive loop, "
              f"{t['speedup_vs_padded']:.2f}x vs padded batches; max |diff| {t['max_abs_diff_vs_naive']:.2e}")
        print(f"in bf16: {b['speedup_vs_naive']:.2f}x vs the fp32 naive loop "
              f"({res['naive_loop_bf16']['speedup_vs_naive']:.2f}x for a bf16 naive loop); "
              f"bf16 moves the dataset mean NLL by {b['dataset_nll_diff']:.1e} "
              f"(95% CI half-width {result['dataset_nll_ci95_halfwidth']:.2f}), "
              f"record means by <= {b['max_record_mean_nll_diff']:.1e}, "
              f"single tokens by <= {b['max_abs_diff_vs_naive']:.2f}")
    if out:
        from thinksafe.core import write_json
        write_json(out, result)
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-star", type=int, default=4)
    ap.add_argument("--n-self", type=int, default=12)
    ap.add_argument("--max-length", type=int, default=640)
    ap.add_argument("--batch-tokens", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "perplexity.json"))
    a = ap.parse_args()
    run(a.n_star, a.n_self, a.max_length, a.batch_tokens, threads=a.threads, repeats=a.repeats, out=a.out)
