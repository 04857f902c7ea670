"""The generation path of thinksafe before per-sample seeds (commit fa79fe1, `thinksafe.generate.HFGenerator`), kept here
as the baseline of bench/generation.py: rows sorted by prompt length, batches of `batch_size` left-padded rows, one
`model.generate` call per batch (transformers' loop, DynamicCache, finished rows kept until the batch ends), top-k
then top-p as a logits processor, the batch's RNG seeded from its rows, budget forcing as a second `generate` call.
"""
from __future__ import annotations
import hashlib

THINK_CLOSE, THINK_CLOSING = "</think>", "\n</think>\n\n"


class TopKTopP:
    "Top-k then top-p (nucleus) filtering in one pass; `top_k=0` and `top_p=1` switch each off."
    def __init__(self, top_k:int=0, top_p:float=1.0): self.top_k, self.top_p = int(top_k), float(top_p)
    def __call__(self, input_ids, scores):
        import torch
        V = scores.shape[-1]
        if self.top_k and self.top_k < V: vals, idx = scores.topk(self.top_k, dim=-1)
        elif self.top_p < 1.0: vals, idx = scores.sort(dim=-1, descending=True)
        else: return scores
        if self.top_p < 1.0:
            probs = vals.float().softmax(-1)
            drop = (probs.cumsum(-1) - probs) >= self.top_p
            drop[..., 0] = False
            vals = vals.masked_fill(drop, float("-inf"))
        return torch.full_like(scores, float("-inf")).scatter_(-1, idx, vals)


def rows_seed(seed:int, keys) -> int:
    h = hashlib.sha256(f"{seed}|".encode() + "|".join(f"{p}:{j}" for p, j in keys).encode())
    return int(h.hexdigest()[:15], 16)


def _cut(ids, stops):
    for i, t in enumerate(ids):
        if t in stops: return ids[:i], "stop"
    return ids, "length"


def _run_batch(model, ids, sc, seed, max_new, stops, pad_id):
    import torch
    from transformers import GenerationConfig, LogitsProcessorList
    dev, L = model.device, max(len(x) for x in ids)
    inp = torch.full((len(ids), L), pad_id, dtype=torch.long)
    att = torch.zeros((len(ids), L), dtype=torch.long)
    for r, x in enumerate(ids): inp[r, L - len(x):] = torch.tensor(x); att[r, L - len(x):] = 1
    kw = dict(max_new_tokens=max_new, repetition_penalty=1.0, num_beams=1, num_return_sequences=1, eos_token_id=stops,
              pad_token_id=pad_id, use_cache=True)
    cfg = (GenerationConfig(do_sample=False, **kw) if sc.temperature == 0 else
           GenerationConfig(do_sample=True, temperature=sc.temperature, top_k=0, top_p=1.0, **kw))
    procs = LogitsProcessorList([TopKTopP(sc.top_k, sc.top_p)] if sc.temperature > 0 and (sc.top_k or sc.top_p < 1) else [])
    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        torch.manual_seed(seed)
        out = model.generate(input_ids=inp.to(dev), attention_mask=att.to(dev), generation_config=cfg, logits_processor=procs)
    return [_cut(row, set(stops)) for row in out[:, L:].tolist()]


def baseline_generate(model, tok, enc:list[list[int]], keys:list[tuple], sc, stops:list[int], pad_id:int,
                      close_think:bool=False, think_fraction:float=0.5) -> list[tuple[list[int], str]]:
    "Generated ids (up to the stop token) and finish reason for each prompt in `enc` (one sample each), as the old HFGenerator did."
    close_ids = tok(THINK_CLOSING, add_special_tokens=False)["input_ids"]
    rows = sorted(range(len(enc)), key=lambda i: (-len(enc[i]), i))
    done = [None] * len(enc)
    for b in range(0, len(rows), sc.batch_size):
        batch = rows[b:b + sc.batch_size]
        ids = [enc[i] for i in batch]
        max_new = sc.max_new_tokens
        seed = rows_seed(sc.seed, [keys[i] for i in batch])
        budget = max(1, int(max_new * think_fraction)) if close_think else max_new
        outs = _run_batch(model, ids, sc, seed, budget, stops, pad_id)
        if close_think:
            todo = [r for r, (new, why) in enumerate(outs)
                    if THINK_CLOSE not in tok.decode(new) and max_new - len(new) - len(close_ids) > 0]
            if todo:
                ctx = [ids[r] + outs[r][0] + close_ids for r in todo]
                room = min(max_new - len(outs[r][0]) - len(close_ids) for r in todo)
                for r, (ans, why) in zip(todo, _run_batch(model, ctx, sc, seed + 1, room, stops, pad_id)):
                    outs[r] = (outs[r][0] + close_ids + ans, why)
        for i, o in zip(batch, outs): done[i] = o
    return done
