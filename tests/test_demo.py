"""`thinksafe demo --quick` as `make test` runs it: the whole pipeline on the embedded model, composed from the `Run`
methods a user calls, ending in the report `thinksafe report` writes, with every claim marked; a second run reuses
every sample, judgment and adapter."""
import json, os, subprocess, sys, time
from pathlib import Path

def test_quick_demo_end_to_end_and_resume(tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "thinksafe.cli", "demo", "--quick", "--out-dir", str(tmp_path/"demo")]
    t = time.time()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    first = time.time() - t
    assert p.returncode == 0, p.stderr[-4000:]
    out = tmp_path/"demo"
    report = (out/"report"/"report.md").read_text()
    for section in ("The paper's claims on this run", "Safety vs reasoning", "McNemar", "Self-generation and refusal steering",
                    "perplexity", "Settings scaled for the demo", "Time"):
        assert section in report, section
    r = json.loads((out/"demo.json").read_text())
    assert {v["status"] for v in r["claims"]} <= {"shown", "not shown", "contradicted"} and len(r["claims"]) >= 5
    assert [v["claim"] for v in r["claims"][:2]] == ["Refusal steering raises acceptance on harmful prompts (alpha_I > alpha)",
                                                     "Positive control: training on explicit refusals lowers the harmful rate"]
    assert (out/"report"/"figures"/"pareto.png").exists() and (out/"report"/"report.json").exists()
    # the report is thinksafe.report's: the same numbers from `thinksafe report` on the demo's evaluations
    rep = json.loads((out/"report"/"report.json").read_text())
    assert list(rep["runs"]) == ["Initial", "ThinkSafe", "DirectRefusal"] and rep["claims"] == r["claims"]
    # ThinkSafe and the GRPO baseline counted the same way, and the measured ratio in the report
    c = r["compute"]
    assert c["methods"] == ["ThinkSafe", "GRPO"] and {"generation", "guard", "training"} <= set(c["stages"])
    assert c["total"]["ThinkSafe"]["flops"] > 0 and c["total"]["GRPO"]["flops"] > 0
    for m in ("ThinkSafe", "GRPO"):
        assert all(c["stages"][s][m]["flops"] > 0 and c["stages"][s][m]["wall_s"] > 0 for s in ("generation", "training"))
        assert c["stages"]["guard"][m]["wall_s"] >= 0
    ratio = c["ratios"]["GRPO"]["flops"]
    assert abs(ratio - c["total"]["GRPO"]["flops"] / c["total"]["ThinkSafe"]["flops"]) < 1e-9
    assert f"GRPO / ThinkSafe = **{ratio:.2f}x FLOPs" in report
    samples = sorted(out.rglob("*.jsonl"))
    before = {f: f.stat().st_mtime for f in samples if "perplexity" not in f.parts}
    t = time.time()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-4000:]
    assert time.time() - t < first / 2                                 # every sample, judgment and adapter reused
    stores = [f for f in before if ".judged." in f.name or f.name.startswith(("samples-", "heldout", "lookalike", "arith"))]
    assert stores and all(f.stat().st_mtime == before[f] for f in stores)   # no store written again
    assert json.loads((out/"demo.json").read_text())["claims"] == r["claims"]
