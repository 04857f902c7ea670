"""Training step time on the embedded model: HF's built-in loss vs ThinkSafe's chunked CE vs ThinkSafe+KL.

Same LoRA model, same batch, same process; forward + backward per step. Prints a table, writes bench/training.json.
    python bench/training.py [--steps 5] [--batch 2]
"""
import argparse, json, time
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parent.parent

def _batch(tok, n:int):
    from thinksafe.models import format_example
    from thinksafe.train import tokenize_example, collate
    from thinksafe.synthesize import DEMO_PROMPTS
    resp = ("<think>\nThe user asks something I should answer carefully. Let me think about the steps, the facts and "
            "the safest helpful reply, and keep it short.\n</think>\n\nHere is a short, careful answer with three points: "
            "first, the background; second, the main steps; third, what to watch out for. ") * 2
    ex = [tokenize_example(tok, *format_example(tok, p, resp)) for p, _ in DEMO_PROMPTS[40:40 + n]]
    return collate(ex, tok.pad_token_id)

def _time(fn, steps:int) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(steps): fn()
    return (time.perf_counter() - t) / steps

def run(steps:int=5, batch:int=2, threads:int|None=2, out=ROOT/"bench"/"training.json", verbose:bool=True) -> dict:
    "Seconds per forward+backward step for each loss; returns the table."
    if threads: torch.set_num_threads(threads)
    from peft import get_peft_model
    from thinksafe.core import TrainConfig, write_json
    from thinksafe.models import load_model
    from thinksafe.train import lora_config, response_losses
    model, tok = load_model()
    model = get_peft_model(model, lora_config(TrainConfig())); model.train()
    b = _batch(tok, batch)
    n_resp = int(b["labels"][:, 1:].ne(-100).sum())
    def hf():
        model.zero_grad(); model(**b).loss.backward()
    def ce():
        model.zero_grad(); r = response_losses(model, **b); (r["loss_sum"] / r["n_tokens"]).backward()
    def kl():
        model.zero_grad(); r = response_losses(model, **b, use_kl=torch.ones(batch, dtype=torch.bool)); (r["loss_sum"] / r["n_tokens"]).backward()
    rows = {name: _time(f, steps) for name, f in (("HF model(**batch).loss", hf), ("ThinkSafe CE (chunked head)", ce), ("ThinkSafe+KL (base pass + KL)", kl))}
    ref = rows["HF model(**batch).loss"]
    res = {"model": "smollm2-135m + LoRA r=32 (all linear)", "batch": batch, "seq_len": int(b["input_ids"].shape[1]),
           "response_tokens": n_resp, "steps": steps, "threads": threads,
           "rows": [{"loss": k, "s_per_step": round(v, 4), "tokens_per_s": round(n_resp / v, 1), "ratio_vs_hf": round(v / ref, 2)} for k, v in rows.items()]}
    if verbose:
        print(f"\nTraining step (forward+backward), batch {batch} x {res['seq_len']} tokens, {steps} steps")
        print(f"{'loss':34s} {'s/step':>8s} {'resp tok/s':>11s} {'x HF':>6s}")
        for r in res["rows"]: print(f"{r['loss']:34s} {r['s_per_step']:8.3f} {r['tokens_per_s']:11.1f} {r['ratio_vs_hf']:6.2f}")
    if out: write_json(out, res)
    return res

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5); ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2); ap.add_argument("--out", default=str(ROOT/"bench"/"training.json"))
    a = ap.parse_args(); run(a.steps, a.batch, a.threads, a.out)
