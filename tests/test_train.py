"""Training survives a hard kill: a run killed (SIGKILL) right after a checkpoint resumes from it on rerun."""
import json, subprocess, sys, textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import os, sys, json, torch
    from pathlib import Path
    torch.set_num_threads(1)
    from thinksafe.core import *
    from thinksafe.models import tiny_model_dir
    import thinksafe.train as T
    out, kill_at = Path(sys.argv[1]), int(sys.argv[2])
    if kill_at:
        orig = T.ComputeCallback.on_save
        def on_save(self, args, state, control, **kw):
            orig(self, args, state, control, **kw)
            if state.global_step >= kill_at: os.kill(os.getpid(), 9)   # die like an OOM-killed job
        T.ComputeCallback.on_save = on_save
    recs = [{"prompt": f"question {i}?", "response": f"<think>\\nthink {i}</think>\\n\\nanswer {i}", "label": "vanilla_benign" if i % 2 else "vanilla_harmful"} for i in range(4)]
    cfg = RunConfig(out_dir=str(out), model=ModelConfig(name=str(tiny_model_dir(out/"tiny"))),
                    train=TrainConfig(kl=True, lora_r=4, lora_alpha=8, max_steps=4, gradient_accumulation_steps=1, save_steps=2,
                                      learning_rate=1e-3, gradient_checkpointing=False))
    T.run_sft(cfg, data=recs)
""")

def _run(tmp_path, kill_at):
    return subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(kill_at)], capture_output=True, text=True, timeout=300)

def test_killed_run_resumes(tmp_path):
    p = _run(tmp_path, 2)
    assert p.returncode == -9, p.stderr[-2000:]
    ck = tmp_path/"train"/"checkpoints"
    assert [c.name for c in ck.glob("checkpoint-*")] == ["checkpoint-2"]
    assert not (tmp_path/"train"/"adapter").exists()
    p = _run(tmp_path, 0)
    assert p.returncode == 0, p.stderr[-2000:]
    comp = json.loads((tmp_path/"train"/"compute.json").read_text())
    assert comp["steps"] == 4 and Path(comp["resumed_from"]).name == "checkpoint-2", comp
    first = json.loads((ck/"checkpoint-2"/"compute.json").read_text())
    assert comp["tokens_trained"] > first["tokens_trained"] > 0          # accounting continued, not restarted
    steps = [c["step"] for c in json.loads((tmp_path/"train"/"curves.json").read_text())]
    assert steps == [1, 2, 3, 4], steps
    assert (tmp_path/"train"/"adapter"/"adapter_model.safetensors").exists()
