"""`thinksafe demo --quick --set model.backend=vllm` as `make test` runs it: the student sampled by the real vLLM engine
(one engine, every trained adapter served as a LoRA request), steering by the instruction only (activation steering needs
transformers hooks), the backend recorded in every sample store's fingerprint; a second run reuses every sample and
adapter and starts no engine."""
import json, os, subprocess, sys, time
from pathlib import Path
import pytest
from conftest import require_vllm

def test_demo_steering_on_vllm():
    from thinksafe.config import RunConfig, ModelConfig, SteeringConfig
    from thinksafe.core import ConfigError
    from thinksafe.pipeline import demo_steering
    vllm = lambda mode: RunConfig(model=ModelConfig(backend="vllm"), steering=SteeringConfig(mode=mode))
    c = vllm("both")
    assert "instruction only" in demo_steering(c) and c.steering.mode == "instruction"
    assert [demo_steering(vllm(m)) for m in ("instruction", "none")] == [None, None]
    with pytest.raises(ConfigError, match="steering.mode=activation"): demo_steering(vllm("activation"))
    hf = RunConfig(steering=SteeringConfig(mode="both"))
    assert demo_steering(hf) is None and hf.steering.mode == "both"

def test_quick_demo_on_vllm(tmp_path):
    require_vllm()
    env = {**os.environ, "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "thinksafe.cli", "demo", "--quick", "--set", "model.backend=vllm", "--out-dir", str(tmp_path/"demo")]
    t = time.time()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    first = time.time() - t
    assert p.returncode == 0, p.stderr[-4000:]
    assert p.stdout.count("[demo] vLLM engine started") == 1            # one engine for the whole run
    out = tmp_path/"demo"
    r = json.loads((out/"demo.json").read_text())
    assert (r["backend"], r["steering_mode"]) == ("vllm", "instruction") and len(r["claims"]) >= 5
    report = (out/"report"/"report.md").read_text()
    assert "Generation: vLLM" in report and "McNemar" in report
    sdir = out/"synth"/"smollm2-135m"
    for store in ("samples-steered", "samples-plain"):
        fp = json.loads((sdir/f"{store}.fingerprint.json").read_text())
        assert (fp["backend"], fp["steering"] if store == "samples-plain" else fp["steering"]["mode"]) == ("vllm", "none" if store == "samples-plain" else "instruction")
    samples = [json.loads(l) for l in (sdir/"samples-steered.jsonl").read_text().splitlines() if l.strip()]
    assert samples and any(s["think_closed"] for s in samples)                       # budget forcing on vLLM too
    evals = [f for f in (out/"eval").rglob("*.fingerprint.json") if ".judged." not in f.name]
    assert len(evals) == 9 and all(json.loads(f.read_text())["backend"] == "vllm" for f in evals)   # 3 models x 3 sets
    assert {json.loads(l)["model"] for l in (out/"eval"/"smollm2-135m+ThinkSafe"/"arithmetic.jsonl").read_text().splitlines()} == {"smollm2-135m+ThinkSafe"}
    t = time.time()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-4000:]
    assert time.time() - t < first / 2                                 # every sample and adapter reused
    assert "[demo] vLLM engine started" not in p.stdout                # nothing to sample: no engine started
