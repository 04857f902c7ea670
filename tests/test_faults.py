"""Reliability under faults (issue 7). Kill -9 tests live beside their step: tests/test_synthesize.py (synthesis),
tests/test_train.py (training, resumes from its checkpoint), tests/test_evaluate.py (evaluation). Here: the rest."""
import errno, json, os
from pathlib import Path
import pytest
from thinksafe.core import *
from thinksafe.config import *
from thinksafe.records import *

def test_full_disk_and_read_only_dir_are_reported_and_nothing_is_lost(tmp_path, monkeypatch):
    target = tmp_path/"results.json"
    write_json(target, {"kept": 1})
    def fail(code):
        def f(*a, **k): raise OSError(code, os.strerror(code))
        return f
    monkeypatch.setattr(os, "replace", fail(errno.ENOSPC))
    with pytest.raises(OutputError, match="disk full"): write_json(target, {"kept": 2})
    monkeypatch.undo()
    import tempfile
    monkeypatch.setattr(tempfile, "mkstemp", fail(errno.EROFS))
    with pytest.raises(OutputError, match="read-only file system"): write_jsonl(target, [{"a": 1}])
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"kept": 1}                     # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]           # and no temp file is left behind
    monkeypatch.setattr("builtins.open", fail(errno.ENOSPC))
    with pytest.raises(OutputError, match="disk full"): append_jsonl(tmp_path/"log.jsonl", [{"a": 1}])

def test_no_remote_code_and_safetensors_only(monkeypatch):
    import transformers
    from thinksafe import models
    seen = {}
    def fake(path, **kw): seen.update(kw); raise OSError("stop here")
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake)
    with pytest.raises(ThinkSafeError): models.load_model("some-org/some-model")
    assert seen["trust_remote_code"] is False and seen["use_safetensors"] is True
    with pytest.raises(ThinkSafeError): models.load_from_config(load_config(None, ["model.name=a/b", "model.trust_remote_code=true"]).model)
    assert seen["trust_remote_code"] is True                                   # only when the config says so

def test_training_data_with_unclosed_empty_and_corrupt_records(tmp_path):
    from thinksafe.train import load_sft_records
    rec = lambda r: json.dumps({"instruction": "q?", "response": r, "prompt_label": "vanilla_harmful"}) + "\n"
    (tmp_path/"d.jsonl").write_text(rec("<think>\nok\n</think>\nI can't help.") + rec("<think>\nnever closed") + rec(""))
    recs, stats = load_sft_records(tmp_path/"d.jsonl")
    assert (len(recs), stats["unclosed_think"]) == (1, 2)                      # counted skips, never silent
    assert recs[0]["response"].endswith("</think>\n\nI can't help.")
    (tmp_path/"e.jsonl").write_text(rec("<think>a</think>b") + '{"instruction": "q?", "respo\n')
    with pytest.raises(DataError, match=r"e.jsonl:2: invalid JSON"): load_sft_records(tmp_path/"e.jsonl")

def test_a_guard_that_raises_stops_evaluation_and_keeps_what_was_written(tmp_path):
    import dataclasses
    from thinksafe.stages import evaluate, stored_samples
    from thinksafe.guards import Guard
    class Echo:
        name, n_params = "echo", 0
        def generate(self, prompts, n=None, sampling=None, desc="", sample_indices=None):
            return [dataclasses.replace(p, response="<think>\nx\n</think>\n\nSure.", sample_idx=j).parse() for p in prompts for j in (sample_indices or range(n))]
        def close(self): pass
    class Broken(Guard):
        name, calls = "broken", 0
        def judge(self, samples, part="both"):
            Broken.calls += 1
            if Broken.calls > 1: raise RuntimeError("guard server down")
            for s in samples: add_judgment(s, self.name, "unsafe", 0.9, False, part=part)
            return samples
    cfg = RunConfig(out_dir=str(tmp_path)); cfg.guard.batch_size = 1     # judge rounds of 64 samples
    items = [Sample(f"harmful {i}", "vanilla_harmful", benchmark="b", kind="safety", item_id=str(i)) for i in range(100)]
    with pytest.raises(RuntimeError, match="guard server down"):
        evaluate(cfg, Echo(), Broken(), sets={"b": items}, out=tmp_path/"ev", progress=False)
    kept = stored_samples(tmp_path/"ev", "b")
    assert len(kept) == 100                                                  # every generated sample is on disk
    assert sum(bool(s.judgments) for s in kept) == 64 and all(s.verdict in ("unsafe", None) for s in kept)   # nothing judged 'safe' by default

def test_prompt_longer_than_context_is_a_counted_skip(tmp_path):
    from thinksafe.models import tiny_model
    from thinksafe.generate import HFGenerator
    from thinksafe.synthesize import group_stats
    m, tok = tiny_model()
    gen = HFGenerator(m, tok, max_model_len=64, progress=False)
    out = gen.generate([Sample("hi"), Sample("word " * 100)], sampling=SamplingConfig(max_new_tokens=4))
    assert not out[0].skipped and "context holds 64" in out[1].skipped
    assert group_stats([[o] for o in out])["skipped"] == 1
