"""compute.json counts what ran (issue 19, item 5): skipped prompts count zero tokens, a run killed and resumed counts each
finished chunk once (its compute.json equals an uninterrupted run's), a shard cannot start beside an unsharded run of the same
store and duplicate work is not counted; every file a run writes records the package version and commit."""
import csv, dataclasses, hashlib, io, json
from pathlib import Path
import pytest

from thinksafe.core import *
from thinksafe.config import *
from thinksafe.records import *
from thinksafe.store import *
from thinksafe.guards import RefusalPatternGuard
from thinksafe.run import Run, stored_samples, stage_compute, compute_path, read_compute, STEERED
from thinksafe.generate import generate_stage
import thinksafe.synthesize          # Run.synthesize
from thinksafe.evaluate import evaluate as evaluate_in


def synth_dir(cfg): return Run(cfg).synth_dir()


def synthesize(cfg, generator, guard, progress=False):
    return Run(cfg).synthesize(generator=generator, guard=guard, progress=progress)


def evaluate(cfg, generator, guard, sets, out, progress=False):
    return evaluate_in(cfg, out, generator, guard, sets=sets, progress=progress)


class Scripted:
    "Canned responses by (seed, prompt, index); 7 prompt + 5 new tokens each; raises once `fail_after` calls are done."
    name, n_params = "scripted", 1000
    def __init__(self, fail_after=None): self.calls, self.fail_after = 0, fail_after
    def generate(self, prompts, n=None, sampling=None, desc="", sample_indices=None):
        if self.fail_after is not None and self.calls >= self.fail_after: raise RuntimeError("killed")
        self.calls += 1
        out = []
        for p in prompts:
            for j in (range(n) if sample_indices is None else sample_indices):
                h = int(hashlib.sha256(f"{sampling.seed}|{p.prompt_id}|{j}".encode()).hexdigest()[:8], 16) / 16**8
                r = "<think>no</think>I'm sorry, but I can't help with that." if h < 0.5 else "<think>ok</think>Sure, step one..."
                out.append(dataclasses.replace(p, response=r, sample_idx=j, new_tokens=5, prompt_tokens=7, thinking="", answer="").parse())
        return out
    def close(self): pass


def cfg_for(out, **kw):
    return RunConfig(name="c", out_dir=str(out), synth=SynthConfig(k=2, limit=12, **kw), sampling=SamplingConfig(batch_size=2, chunk=4, seed=1))


def counted(path):
    "compute.json without the wall times (they are measured, not counted)."
    doc = json.loads(Path(path).read_text())
    strip = lambda e: {k: v for k, v in e.items() if k != "wall_s"}
    return {"stages": {k: strip(v) for k, v in doc["stages"].items()}, "total": strip(doc["total"])}


def test_killed_and_resumed_synthesis_counts_what_an_uninterrupted_one_does(tmp_path):
    ref = cfg_for(tmp_path / "ref")
    synthesize(ref, Scripted(), RefusalPatternGuard(), progress=False)
    cfg = cfg_for(tmp_path / "run")
    with pytest.raises(RuntimeError, match="killed"):
        synthesize(cfg, Scripted(fail_after=1), RefusalPatternGuard(), progress=False)    # one chunk finished, then killed
    assert len((synth_dir(cfg) / f"{STEERED}.jsonl").read_text().splitlines()) == 4 * 2
    synthesize(cfg, Scripted(), RefusalPatternGuard(), progress=False)
    want = counted(compute_path(synth_dir(ref)))
    assert counted(compute_path(synth_dir(cfg))) == want
    assert want["stages"]["generation"]["tokens"] == 12 * 2 * (7 + 5)                  # every sample once
    assert want["stages"]["generation"]["flops"] == 2 * 1000 * 12 * 2 * 12


def test_killed_and_resumed_evaluation_counts_what_an_uninterrupted_one_does(tmp_path):
    items = {"b": [Sample(f"harmful {i}", "vanilla_harmful", benchmark="b", kind="safety", item_id=str(i)) for i in range(10)]}
    mk = lambda d: RunConfig(out_dir=str(d), sampling=SamplingConfig(chunk=3))
    evaluate(mk(tmp_path / "a"), Scripted(), RefusalPatternGuard(), sets=items, out=tmp_path / "a", progress=False)
    with pytest.raises(RuntimeError, match="killed"):
        evaluate(mk(tmp_path / "b"), Scripted(fail_after=2), RefusalPatternGuard(), sets=items, out=tmp_path / "b", progress=False)
    evaluate(mk(tmp_path / "b"), Scripted(), RefusalPatternGuard(), sets=items, out=tmp_path / "b", progress=False)
    assert counted(compute_path(tmp_path / "b")) == counted(compute_path(tmp_path / "a"))
    assert counted(compute_path(tmp_path / "a"))["stages"]["generation"]["tokens"] == 10 * 12


def test_a_skipped_prompt_counts_zero_tokens(tmp_path):
    from thinksafe.models import tiny_model
    from thinksafe.generate import HFGenerator
    m, tok = tiny_model()
    gen = HFGenerator(m, tok, max_model_len=64, progress=False)
    cfg = RunConfig(out_dir=str(tmp_path), sampling=SamplingConfig(max_new_tokens=4))
    items = {"b": [Sample("hi", "vanilla_harmful", benchmark="b", kind="safety", item_id="short"),
                   Sample("word " * 500, "vanilla_harmful", benchmark="b", kind="safety", item_id="long")]}
    evaluate(cfg, gen, RefusalPatternGuard(), sets=items, out=tmp_path / "ev", progress=False)
    ss = {s.item_id: s for s in stored_samples(tmp_path / "ev", "b")}
    assert ss["long"].skipped and not ss["short"].skipped
    doc = read_compute(tmp_path / "ev")
    assert doc["stages"]["generation"]["tokens"] == ss["short"].prompt_tokens + ss["short"].new_tokens   # the long prompt: zero
    assert doc["stages"]["guard"]["tokens"] == ss["short"].prompt_tokens + ss["short"].new_tokens


def test_a_shard_cannot_start_beside_an_unsharded_run(tmp_path):
    cfg = RunConfig(out_dir=str(tmp_path))
    items = [Sample(f"p{i}", "vanilla_benign") for i in range(8)]
    with Store(tmp_path, "s"):                                          # an unsharded run of the store is running
        with pytest.raises(StoreLocked, match="unsharded run .* a shard cannot run beside it"):
            generate_stage(cfg, items, tmp_path, "s", n=1, generator=Scripted(), shard="0/2", progress=False)
    with Store(tmp_path, "s", shard="1/2"):                             # a shard is running: no unsharded run beside it
        with pytest.raises(StoreLocked, match="another process"):
            generate_stage(cfg, items, tmp_path, "s", n=1, generator=Scripted(), progress=False)
        generate_stage(cfg, items, tmp_path, "s", n=1, generator=Scripted(), shard="0/2", progress=False)   # shards run together


def test_shards_and_a_later_unsharded_run_count_each_sample_once(tmp_path):
    cfg = RunConfig(out_dir=str(tmp_path))
    items = [Sample(f"p{i}", "vanilla_benign") for i in range(10)]
    generate_stage(cfg, items[:6], tmp_path / "a", "s", n=2, generator=Scripted(), shard="0/2", progress=False)
    generate_stage(cfg, items[:6], tmp_path / "a", "s", n=2, generator=Scripted(), shard="1/2", progress=False)
    gen = Scripted()
    generate_stage(cfg, items, tmp_path / "a", "s", n=2, generator=gen, progress=False)    # only the 4 new prompts
    generate_stage(cfg, items, tmp_path / "b", "s", n=2, generator=Scripted(), progress=False)
    assert stage_compute(tmp_path / "a", ["s"]) | {"wall_s": 0} == stage_compute(tmp_path / "b", ["s"]) | {"wall_s": 0}
    assert stage_compute(tmp_path / "a", ["s"])["tokens"] == 10 * 2 * 12


def test_every_file_records_version_and_commit(tmp_path):
    cfg = cfg_for(tmp_path)
    res = synthesize(cfg, Scripted(), RefusalPatternGuard(), progress=False)
    from thinksafe.store import writer_info
    want = writer_info()      # what this process records (looked up once: the tree may change under a running test)
    assert all({**r["meta"], **want} == r["meta"] for _, r in read_jsonl(res.records_path))   # each kept record
    assert read_compute(res.dir).items() >= want.items()
    for fp in synth_dir(cfg).glob("*.fingerprint.json"): assert want in json.loads(fp.read_text())["written_by"]
    items = {"b": [Sample("harmful", "vanilla_harmful", benchmark="b", kind="safety", item_id="0")]}
    evaluate(RunConfig(out_dir=str(tmp_path)), Scripted(), RefusalPatternGuard(), sets=items, out=tmp_path / "ev", progress=False)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "ev" / "results.csv").read_text())))
    assert rows and all(r["thinksafe_version"] == want["thinksafe_version"] and r["git_commit"] == (want["git_commit"] or "") for r in rows)
    assert read_compute(tmp_path / "ev").items() >= want.items()
