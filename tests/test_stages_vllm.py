"""The stages on the vLLM path, with a fake `vllm` module that records every call: one engine alive at a time
(the student's engine is deleted before the guard's is created), all pending prompts in one call, per-sample seeds."""
import gc, sys, types
from pathlib import Path
import pytest
from thinksafe.config import *
from thinksafe.records import *
from thinksafe.store import sample_seed

EVENTS = []

class _LP:
    def __init__(self, lp): self.logprob = lp

class _Completion:
    def __init__(self, index, text): self.index, self.text, self.token_ids, self.finish_reason = index, text, [1, 2, 3], "stop"

class _Request:
    def __init__(self, outputs, prompt_ids=(1, 2)): self.outputs, self.prompt_token_ids = outputs, list(prompt_ids)

class FakeLLM:
    "Records creation, calls and deletion; answers every chat with a refusal and every guard call with 'safe'."
    tokenizer = None
    def __init__(self, model=None, **kw):
        self.name, self.kw = str(model), kw
        EVENTS.append(("create", Path(self.name).name))
    def get_tokenizer(self): return FakeLLM.tokenizer
    def chat(self, messages, sampling_params=None, use_tqdm=False, lora_request=None, **kw):
        EVENTS.append(("chat", len(messages), [p.seed for p in sampling_params] if isinstance(sampling_params, list) else None))
        n = lambda p: getattr(p, "n", 1) or 1
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(messages)
        return [_Request([_Completion(i, "<think>\nThis is harmful.\n</think>\n\nI'm sorry, but I can't help with that.") for i in range(n(p))]) for p in params]
    def generate(self, prompts, sampling_params=None, use_tqdm=False, **kw):
        EVENTS.append(("generate", len(prompts)))
        tok = FakeLLM.tokenizer
        safe, unsafe = (tok.convert_tokens_to_ids(tok.tokenize(w))[0] for w in ("safe", "unsafe"))
        class _Out:
            def __init__(self): self.logprobs, self.text, self.token_ids = [{safe: _LP(-0.05), unsafe: _LP(-3.0)}], "safe", [safe]
        return [_Request([_Out()]) for _ in prompts]
    def __del__(self): EVENTS.append(("delete", Path(self.name).name))

class FakeSamplingParams:
    def __init__(self, **kw): self.__dict__.update(kw)

@pytest.fixture
def fake_vllm(monkeypatch, tmp_path_factory):
    from thinksafe.models import tiny_model_dir, load_tokenizer
    d = tiny_model_dir(tmp_path_factory.mktemp("m")/"tiny")
    FakeLLM.tokenizer = load_tokenizer(str(d))
    vllm = types.ModuleType("vllm"); vllm.LLM, vllm.SamplingParams = FakeLLM, FakeSamplingParams
    lora = types.ModuleType("vllm.lora"); req = types.ModuleType("vllm.lora.request")
    req.LoRARequest = lambda *a, **k: ("lora",) + a
    for name, mod in (("vllm", vllm), ("vllm.lora", lora), ("vllm.lora.request", req)): monkeypatch.setitem(sys.modules, name, mod)
    EVENTS.clear()
    return d

def test_one_engine_at_a_time_and_one_call(fake_vllm, tmp_path):
    from thinksafe.stages import synthesize, synth_dir, STEERED, stored_samples
    d = str(fake_vllm)
    cfg = load_config(None, [f"model.name={d}", "model.backend=vllm", "guard.name=llama-guard", f"guard.path={d}", "guard.backend=vllm",
                             "synth.k=2", "synth.limit=12", f"out_dir={tmp_path}", "sampling.max_new_tokens=16"])
    res = synthesize(cfg, progress=False)
    gc.collect()
    kinds = [e[0] for e in EVENTS]
    assert kinds[:3] == ["create", "chat", "delete"], EVENTS          # the student's engine is gone ...
    assert kinds[3] == "create" and "generate" in kinds[4:], EVENTS  # ... before the guard's engine is created
    assert kinds.count("chat") == 1 and EVENTS[1][1] == 12 * 2      # every pending prompt (x K samples) in one call
    seeds = EVENTS[1][2]
    samples = stored_samples(synth_dir(cfg), STEERED)
    assert sorted(seeds) == sorted(sample_seed(0, s.prompt_id, s.sample_idx) for s in samples)   # one seed per sample
    assert res["records"] > 0 and all(s.verdict == "safe" for s in samples)
