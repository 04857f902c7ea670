"""A LoRA adapter (r=32) written by `thinksafe train` (`train.run_sft`) served by the real vLLM engine (`enable_lora`, a
`LoRARequest`) against the same adapter merged into the transformers model (`load_model(..., merge=True)`): greedy
continuations compared token for token, fp32 on both; the base model on both engines is the reference for the gap."""
import json
import pytest
from conftest import require_vllm
from thinksafe.config import *
from thinksafe.records import Sample

RECS = [{"prompt": p, "response": "<think>\nThis asks for harm. I must refuse.\n</think>\n\nI'm sorry, but I can't help with that.",
         "label": "vanilla_harmful"} for p in ("How do I pick a lock?", "How do I make a weapon?", "How do I hack an account?",
                                             "How do I steal a car?")]
PROMPTS = ["How do I pick a lock?", "How can I hurt someone?", "What is 2+2?", "Name three colors.", "How do I bake bread?",
           "Write a haiku about rain.", "How do I break into a house?", "What is the capital of France?"]
N = 32

def common_prefix(a, b) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]: n += 1
    return n

def test_adapter_on_vllm_matches_the_merged_model(tmp_path):
    require_vllm()
    import time
    T = [time.time()]; lap = lambda: T.append(time.time())
    from thinksafe.train import run_sft
    from thinksafe.models import load_model
    from thinksafe.generate import HFGenerator
    from thinksafe.vllm_backend import VLLMGenerator, shutdown_engine
    cfg = load_config(None, [f"out_dir={tmp_path}", "train.lora_r=32", "train.lora_alpha=64", "train.target_modules=all-linear",
                             "train.learning_rate=3e-3", "train.max_steps=4", "train.per_device_batch_size=2", "train.effective_batch_size=2",
                             "train.gradient_checkpointing=false", "train.lora_dropout=0.0", "train.max_length=96"])
    from thinksafe.run import Run
    adapter = Run(cfg).train(data=RECS).adapter
    lap()
    assert json.loads((adapter/"adapter_config.json").read_text())["r"] == 32
    greedy = SamplingConfig(temperature=0.0, top_k=0, top_p=1.0, max_new_tokens=N, seed=0)
    mc = ModelConfig(backend="vllm", max_model_len=1024, adapter=str(adapter))
    lora = VLLMGenerator(mc, greedy, progress=False, close_think=False); lap()
    try:
        assert lora.llm.llm_engine.vllm_config.lora_config.max_lora_rank == 32
        base = VLLMGenerator(ModelConfig(backend="vllm"), greedy, llm=lora.llm, progress=False, close_think=False)   # the same engine, no LoRARequest
        v_lora, v_base = (g.generate(PROMPTS) for g in (lora, base)); lap()
    finally: lora.close()
    tok = lora.tokenizer
    ids = lambda outs: [tok(o.response[len("<think>\n"):], add_special_tokens=False)["input_ids"][:N] for o in outs]
    h_lora = HFGenerator(*load_model(adapter=str(adapter), merge=True), sampling=greedy, progress=False, close_think=False).generate(PROMPTS)
    h_base = HFGenerator(*load_model(), sampling=greedy, progress=False, close_think=False).generate(PROMPTS); lap()
    V, H, VB, HB = ids(v_lora), ids(h_lora), ids(v_base), ids(h_base)
    agree = [(common_prefix(a, b), len(a), len(b)) for a, b in zip(V, H)]
    agree_base = [(common_prefix(a, b), len(a), len(b)) for a, b in zip(VB, HB)]
    changed = sum(a != b for a, b in zip(V, VB))
    print(f"greedy (equal prefix, vLLM length, HF length) per prompt, vLLM+LoRA vs merged HF: {agree}; base vs base: {agree_base}; "
          f"the adapter changed {changed}/{len(PROMPTS)}; seconds: train, engine start, vLLM generate, HF generate = "
          f"{[round(b - a) for a, b in zip(T, T[1:])]}")
    assert changed >= len(PROMPTS) // 2                                    # the adapter is really applied by vLLM
    first = lambda n, a, b: n >= min(16, a, b)                             # the first 16 tokens (or all, if shorter) equal
    assert sum(first(*x) for x in agree) >= len(PROMPTS) - 1               # on all prompts but at most one
    assert sum(a == b for a, b in zip(V, H)) >= len(PROMPTS) // 2          # and at least half the continuations identical
