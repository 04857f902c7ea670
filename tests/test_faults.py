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
    from thinksafe.train import sft_records
    rec = lambda r: json.dumps({"instruction": "q?", "response": r, "prompt_label": "vanilla_harmful"}) + "\n"
    (tmp_path/"d.jsonl").write_text(rec("<think>\nok\n</think>\nI can't help.") + rec("<think>\nnever closed"))
    recs, stats = sft_records(tmp_path/"d.jsonl")
    assert (len(recs), stats["unclosed_think"]) == (1, 1)                      # counted skips, never silent
    assert recs[0]["response"].endswith("</think>\n\nI can't help.")
    (tmp_path/"d.jsonl").write_text((tmp_path/"d.jsonl").read_text() + rec(""))
    with pytest.raises(DataError, match=r"d.jsonl:3: missing or empty response"): sft_records(tmp_path/"d.jsonl")
    (tmp_path/"e.jsonl").write_text(rec("<think>a</think>b") + '{"instruction": "q?", "respo\n')
    with pytest.raises(DataError, match=r"e.jsonl:2: invalid JSON"): sft_records(tmp_path/"e.jsonl")

def test_a_guard_that_raises_stops_evaluation_and_keeps_what_was_written(tmp_path):
    import dataclasses
    from thinksafe.evaluate import evaluate
    from thinksafe.run import stored_samples
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
        evaluate(cfg, tmp_path/"ev", Echo(), Broken(), sets={"b": items}, progress=False)
    kept = stored_samples(tmp_path/"ev", "b")
    assert len(kept) == 100                                                  # every generated sample is on disk
    assert sum(bool(s.judgments) for s in kept) == 64
    assert all(verdict_of(s, "broken") in ("unsafe", None) for s in kept)     # nothing judged 'safe' by default

def test_prompt_longer_than_context_is_a_counted_skip(tmp_path):
    from thinksafe.models import tiny_model
    from thinksafe.generate import HFGenerator
    from thinksafe.synthesize import group_stats
    m, tok = tiny_model()
    gen = HFGenerator(m, tok, max_model_len=64, progress=False)
    out = gen.generate([Sample("hi"), Sample("word " * 100)], sampling=SamplingConfig(max_new_tokens=4))
    assert not out[0].skipped and "context holds 64" in out[1].skipped
    assert group_stats([[o] for o in out], None)["skipped"] == 1


# --- issue 19: disk faults of the stores and reports, permissions, and the small silent mergers ---------------------------
import dataclasses, errno, stat, tempfile, time

class _Echo:
    name, n_params = "echo", 1000
    def generate(self, prompts, n=None, sampling=None, desc="", sample_indices=None):
        return [dataclasses.replace(p, response=f"<think>x</think>{'I cannot help with that.' if len(p.prompt) % 2 else 'Sure.'}", sample_idx=j,
                                    new_tokens=3, prompt_tokens=4, thinking="", answer="").parse() for p in prompts for j in (sample_indices or range(n))]
    def close(self): pass

def _items(n=10):
    return {"b": [Sample(f"harmful {'x' * i}", "vanilla_harmful", benchmark="b", kind="safety", item_id=str(i)) for i in range(n)]}

def _fail(code):
    def f(*a, **k): raise OSError(code, os.strerror(code))
    return f

def test_read_only_output_dir_is_one_line_in_generate_judge_and_evaluate(tmp_path, monkeypatch):
    from thinksafe.evaluate import evaluate
    from thinksafe.generate import generate_stage
    from thinksafe.guards import RefusalPatternGuard, judge_stage
    cfg, out = RunConfig(out_dir=str(tmp_path)), tmp_path / "ev"
    generate_stage(cfg, _items()["b"], out, "b", n=1, generator=_Echo(), progress=False)
    real_open = open
    def no_write(path, mode="r", *a, **k):                   # what a read-only directory does to the lock file
        if "r" not in mode or "+" in mode: raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, mode, *a, **k)
    monkeypatch.setattr("builtins.open", no_write)
    for run in (lambda: generate_stage(cfg, _items()["b"], out, "b", n=1, generator=_Echo(), progress=False),
                lambda: judge_stage(cfg, out, "b", guard=RefusalPatternGuard(), progress=False),
                lambda: evaluate(cfg, out, _Echo(), RefusalPatternGuard(), sets=_items(), progress=False)):
        with pytest.raises(OutputError, match=f"cannot write {out}: permission denied") as e: run()
        assert "\n" not in str(e.value)
    monkeypatch.undo()
    monkeypatch.setattr(Path, "mkdir", _fail(errno.EROFS))   # a new output directory on a read-only file system
    with pytest.raises(OutputError, match="read-only file system"):
        evaluate(cfg, tmp_path / "new", _Echo(), RefusalPatternGuard(), sets=_items(), progress=False)

def test_full_disk_while_appending_leaves_the_store_as_it_was_and_the_next_run_resumes(tmp_path, monkeypatch):
    from thinksafe.evaluate import evaluate, generate_eval
    from thinksafe.guards import RefusalPatternGuard, judge_stage
    cfg = RunConfig(out_dir=str(tmp_path), sampling=SamplingConfig(chunk=4))
    evaluate(cfg, tmp_path / "ref", _Echo(), RefusalPatternGuard(), sets=_items(), progress=False)
    out, real_write, calls = tmp_path / "ev", os.write, []
    def half_then_full(fd, data):
        calls.append(len(data))
        if len(calls) == 1: return real_write(fd, data)
        real_write(fd, bytes(data[:len(data) // 2])); raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OutputError, match=r"cannot write .*b\.jsonl: disk full; this round was not kept") as e:
        generate_eval(cfg, _items(), out, _Echo(), progress=False)          # generate --eval
    assert "\n" not in str(e.value)
    lines = (out / "b.jsonl").read_text().splitlines(keepends=True)
    assert len(lines) == 4 and all(l.endswith("}\n") for l in lines)   # the first round, and no half line
    monkeypatch.setattr(os, "write", _fail(errno.ENOSPC))
    with pytest.raises(OutputError, match=r"b\.judged\.[^ ]+\.jsonl: disk full"):     # judge --eval on a full disk
        judge_stage(cfg, out, "b", guard=RefusalPatternGuard(), progress=False)
    assert all(not p.read_bytes() for p in out.glob("b.judged.*.jsonl"))
    monkeypatch.undo()
    evaluate(cfg, out, _Echo(), RefusalPatternGuard(), sets=_items(), progress=False)
    for f in ("b.jsonl", "results.csv"):
        strip = lambda t: sorted(l for l in t.splitlines())
        assert strip((out / f).read_text()) == strip((tmp_path / "ref" / f).read_text()), f

def test_results_are_readable_by_others_under_umask_077(tmp_path):
    from thinksafe.evaluate import evaluate
    from thinksafe.synthesize import synthesize
    from thinksafe.run import Run
    from thinksafe.guards import RefusalPatternGuard
    old = os.umask(0o077)
    try:
        evaluate(RunConfig(out_dir=str(tmp_path)), tmp_path / "ev", _Echo(), RefusalPatternGuard(), sets=_items(), progress=False)
        sy = RunConfig(out_dir=str(tmp_path), synth=SynthConfig(k=2, limit=6))
        synthesize(sy, Run(sy).synth_dir(), _Echo(), RefusalPatternGuard(), progress=False)
    finally: os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.startswith(".")]
    from thinksafe.run import COMPUTE, RESULTS, SYNTH_STATS
    written = {p.name for p in files}
    assert {RESULTS, "results.csv", "summary.json", COMPUTE, "b.jsonl", "synth.jsonl", SYNTH_STATS} <= written
    for p in files: assert stat.S_IMODE(p.stat().st_mode) & 0o044 == 0o044, (p, oct(p.stat().st_mode))

def test_a_report_is_replaced_together_and_stale_temp_files_are_removed(tmp_path, monkeypatch):
    import tempfile
    from thinksafe.evaluate import evaluate, score_stage
    from thinksafe.guards import RefusalPatternGuard
    out = tmp_path / "ev"
    cfg = RunConfig(name="first", out_dir=str(tmp_path))
    evaluate(cfg, out, _Echo(), RefusalPatternGuard(), sets=_items(), progress=False)
    report = ("results.json", "summary.json", "results.csv")
    before = {f: (out / f).read_bytes() for f in report}
    real, n = tempfile.mkstemp, []
    def third_fails(*a, **k):
        n.append(1)
        if len(n) == 3: raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **k)
    monkeypatch.setattr(tempfile, "mkstemp", third_fails)
    cfg.name = "second"
    with pytest.raises(OutputError, match="disk full"): score_stage(cfg, out, ["b"])
    monkeypatch.undo()
    assert {f: (out / f).read_bytes() for f in report} == before          # all three old, none half-new
    assert not list(out.glob(".*.tmp"))
    stale, live = out / ".results.json.dead1234.tmp", out / ".results.json.live5678.tmp"
    for p in (stale, live): p.write_text("{")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))            # left by a score killed an hour ago
    score_stage(cfg, out, ["b"])
    assert not stale.exists() and live.exists()                            # a writer still running keeps its temp file
    assert json.loads((out / "summary.json").read_text())["name"] == "second"

def test_a_cut_judged_store_makes_select_ask_to_rejudge(tmp_path):
    from thinksafe.synthesize import synthesize, select_stage
    from thinksafe.guards import RefusalPatternGuard, judge_stage
    from thinksafe.run import Run
    cfg = RunConfig(out_dir=str(tmp_path), synth=SynthConfig(k=2, limit=6))
    synth_dir = lambda cfg: Run(cfg).synth_dir()
    n = synthesize(cfg, synth_dir(cfg), _Echo(), RefusalPatternGuard(), progress=False).records
    judged, = synth_dir(cfg).glob("samples-steered.judged.*.jsonl")
    data = judged.read_bytes()
    judged.write_bytes(data[:-20])                                         # a judge killed while writing its last line
    with pytest.raises(ThinkSafeError, match=r"samples-steered\.judged\.[^ ]+\.jsonl: its last line was cut .*`thinksafe judge`") as e:
        select_stage(cfg, synth_dir(cfg))
    assert "\n" not in str(e.value)
    judge_stage(cfg, synth_dir(cfg), "samples-steered", guard=RefusalPatternGuard(), progress=False)   # re-judges that sample
    assert select_stage(cfg, synth_dir(cfg)).records == n

def test_duplicate_prompts_are_reported_and_conflicting_labels_refused(tmp_path, capsys):
    from thinksafe.synthesize import load_prompts
    from thinksafe.benchmarks import load_benchmark
    f = tmp_path / "p.jsonl"
    rows = [("a", "vanilla_harmful"), ("b", "vanilla_benign"), ("a", "vanilla_harmful"), ("a", "vanilla_harmful")]
    f.write_text("".join(json.dumps({"instruction": p, "label": l}) + "\n" for p, l in rows))
    assert [s.prompt for s in load_prompts(SynthConfig(prompts=str(f)))] == ["a", "b"]
    assert f"warning: {f}: 2 duplicate prompts (same text and label) merged" in capsys.readouterr().err
    f.write_text(f.read_text() + json.dumps({"instruction": "b", "label": "vanilla_harmful"}) + "\n")
    with pytest.raises(DataError, match=rf"p\.jsonl:5: this prompt has label 'vanilla_harmful' but line 2 gives it 'vanilla_benign'"):
        load_prompts(SynthConfig(prompts=str(f)))
    g = tmp_path / "bench.csv"
    g.write_text("prompt,label\nx,vanilla_harmful\ny,vanilla_harmful\nx,vanilla_harmful\n")
    assert [s.prompt for s in load_benchmark(str(g), columns={"prompt": "prompt", "label": "label"})] == ["x", "y"]
    assert f"warning: {g}: 1 duplicate prompt merged" in capsys.readouterr().err
    g.write_text("prompt,label\nx,vanilla_harmful\nx,vanilla_benign\n")
    with pytest.raises(DataError, match=r"bench\.csv:3: this prompt has label 'vanilla_benign' but line 2"):
        load_benchmark(str(g), columns={"prompt": "prompt", "label": "label"})

def test_csv_with_an_unclosed_quote_is_reported_where_the_quote_opens(tmp_path):
    from thinksafe.synthesize import load_prompts
    from thinksafe.benchmarks import load_benchmark
    f = tmp_path / "p.csv"
    f.write_text('instruction,label\nfine,vanilla_benign\n"never closed,vanilla_harmful\nnext,vanilla_benign\nlast,vanilla_benign\n')
    with pytest.raises(DataError, match=r"p\.csv:3: unclosed quote"): load_prompts(SynthConfig(prompts=str(f)))
    with pytest.raises(DataError, match=r"p\.csv:3: unclosed quote"): read_records(f)
    with pytest.raises(DataError, match=r"p\.csv:3: unclosed quote"): load_benchmark(str(f), columns={"prompt": "instruction"})
    f.write_text('instruction,label\n"two\nlines, quoted",vanilla_benign\nnext,vanilla_benign\n')   # a closed multi-line field is fine
    assert [s.prompt for s in load_prompts(SynthConfig(prompts=str(f)))] == ["two\nlines, quoted", "next"]

def test_every_command_says_one_line_on_a_read_only_output_directory(tmp_path, monkeypatch, capsys):
    "generate, judge, select, score and evaluate through the CLI: one line naming the directory, exit status 2, no traceback."
    from thinksafe import cli, generate
    from thinksafe.guards import RefusalPatternGuard
    (tmp_path / "b.jsonl").write_text('{"prompt": "harmful one"}\n{"prompt": "harmful two"}\n')
    (tmp_path / "c.yaml").write_text(f"out_dir: {tmp_path / 'run'}\neval:\n  benchmarks:\n    - {{name: b, path: {tmp_path / 'b.jsonl'}, kind: safety}}\n"
                                     f"synth:\n  limit: 4\nguard:\n  name: refusal-patterns\n")
    monkeypatch.setattr(generate, "make_generator", lambda *a, **k: _Echo())
    args = lambda *a: [*a, "-c", str(tmp_path / "c.yaml")]
    assert cli.main(args("synthesize")) == 0 and cli.main(args("evaluate")) == 0
    capsys.readouterr()
    real_open, real_mkstemp = open, tempfile.mkstemp
    def ro(path, mode="r", *a, **k):
        if "r" not in mode or "+" in mode: raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, mode, *a, **k)
    monkeypatch.setattr("builtins.open", ro)
    monkeypatch.setattr(tempfile, "mkstemp", lambda *a, **k: ro(k.get("dir", "."), "w"))
    for cmd in (["generate"], ["generate", "--eval"], ["judge"], ["judge", "--eval"], ["select"], ["score"], ["evaluate"], ["synthesize"]):
        code = cli.main(args(*cmd))
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "permission denied" in err and str(tmp_path / "run") in err, (cmd, code, err)
