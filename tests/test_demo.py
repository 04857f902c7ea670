"""`thinksafe demo --quick` as `make test` runs it: the whole pipeline on the embedded model, composed from the stages,
ending in a report with every claim marked; a second run reuses every step."""
import json, os, subprocess, sys, time
from pathlib import Path

def test_quick_demo_end_to_end_and_resume(tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "thinksafe.cli", "demo", "--quick", "--out-dir", str(tmp_path/"demo")]
    t = time.time()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    first = time.time() - t
    assert p.returncode == 0, p.stderr[-4000:]
    report = (tmp_path/"demo"/"report.md").read_text()
    for section in ("The paper's claims on this run", "Safety vs reasoning", "McNemar", "Self-generation and refusal steering", "perplexity"):
        assert section in report, section
    r = json.loads((tmp_path/"demo"/"demo.json").read_text())
    assert {v["status"] for v in r["verdicts"]} <= {"shown", "not shown", "contradicted"} and len(r["verdicts"]) >= 5
    assert (tmp_path/"demo"/"figures"/"pareto.png").exists()
    # ThinkSafe and the GRPO baseline counted the same way, and the measured ratio in the report
    c = r["compute"]
    assert set(c["stages"]) == {"generation", "guard", "training"} and c["thinksafe"]["flops"] > 0 and c["grpo"]["flops"] > 0
    for method in ("thinksafe", "grpo"):
        assert all(c["stages"][s][f"{method}_flops"] > 0 for s in ("generation", "training"))
        assert all(c["stages"][s][f"{method}_wall_s"] > 0 for s in ("generation", "training")) and c["stages"]["guard"][f"{method}_wall_s"] >= 0
    assert abs(c["flops_ratio"] - c["grpo"]["flops"] / c["thinksafe"]["flops"]) < 1e-9
    assert f"GRPO / ThinkSafe = **{c['flops_ratio']:.2f}x FLOPs" in report
    t = time.time()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert p.returncode == 0 and "done earlier, reusing" in p.stdout + p.stderr
    assert time.time() - t < first / 2                                 # every step reused
