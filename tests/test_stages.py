"""The stages as a user runs them: synthesize killed mid-run and resumed, a guard that fails, changed settings,
every acceptance rule, bad prompt files, re-judging without the student, files readable by others.

A scripted (model-free) generator keeps the file fast; nbs/11_synthesize.ipynb runs the real generator on a tiny model."""
import dataclasses, hashlib, json, os, signal, stat, subprocess, sys, time
from pathlib import Path
import pytest

from thinksafe.core import *
from thinksafe.config import *
from thinksafe.records import *
from thinksafe.store import *
from thinksafe.guards import RefusalPatternGuard
from thinksafe.run import Run, stored_samples, STEERED, PLAIN, SYNTH_STATS
from thinksafe.synthesize import load_prompts, accept, is_candidate, select_stage
from thinksafe.generate import generate_stage
from thinksafe.guards import judge_stage

HERE = Path(__file__).resolve()


class ScriptedGenerator:
    "Deterministic canned responses keyed by (seed, prompt id, sample idx); optional sleep per call; raises if `forbidden`."
    name, n_params = "scripted", 1000
    def __init__(self, sleep=0.0, forbidden=False): self.sleep, self.calls, self.forbidden = sleep, 0, forbidden
    def generate(self, prompts, n=None, sampling=None, desc="", sample_indices=None):
        if self.forbidden: raise AssertionError("the student was called")
        self.calls += 1
        if self.sleep: time.sleep(self.sleep)
        out = []
        for p in prompts:
            for j in (range(n) if sample_indices is None else sample_indices):
                h = int(hashlib.sha256(f"{sampling.seed}|{p.prompt_id}|{j}".encode()).hexdigest()[:8], 16) / 16**8
                refuse = h < (0.7 if p.sent.startswith("The following prompt is harmful") else 0.2)
                if h > 0.95: resp = "<think>\nhmm, still thinking\n"
                elif refuse: resp = "<think>\nThis is harmful.\n</think>\n\nI'm sorry, but I can't help with that."
                else: resp = "<think>\nok\n</think>\n\nSure, here you go: step one..."
                out.append(dataclasses.replace(p, response=resp, sample_idx=j, model=self.name, seed=sample_seed(sampling.seed, p.prompt_id, j),
                                               new_tokens=5, prompt_tokens=7, thinking="", answer="", think_closed=False).parse())
        return out
    def close(self): pass


def make_cfg(out, **synth):
    return RunConfig(name="t", out_dir=str(out), synth=SynthConfig(**{"k": 3, **synth}), sampling=SamplingConfig(batch_size=4, chunk=4, seed=7))


def synth_dir(cfg): return Run(cfg).synth_dir()


def synthesize(cfg, generator, guard, progress=False):
    return Run(cfg).synthesize(generator=generator, guard=guard, progress=progress)


def outputs(cfg):
    "The kept records (without their generation-time meta: wall times) and the statistics."
    d = synth_dir(cfg)
    stats = json.loads((d / SYNTH_STATS).read_text(encoding="utf-8"))
    for k in ("git_commit", "thinksafe_version"): stats.pop(k)
    recs = [{k: v for k, v in r.items() if k != "meta"} for _, r in read_jsonl(d / "synth.jsonl")]
    return recs, stats


def keys(cfg, name=STEERED):
    return [(d["item_id"], d["sample_idx"]) for _, d in read_jsonl(synth_dir(cfg) / f"{name}.jsonl")]


def test_resume_after_kill(tmp_path):
    ref_cfg = make_cfg(tmp_path / "ref", compare_steering=True)
    synthesize(ref_cfg, ScriptedGenerator(), RefusalPatternGuard(), progress=False)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cfg = make_cfg(tmp_path / "run", compare_steering=True)
    proc = subprocess.Popen([sys.executable, str(HERE), "child", cfg.out_dir, "0.15"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    samples = synth_dir(cfg) / f"{STEERED}.jsonl"
    deadline = time.time() + 40
    while time.time() < deadline and proc.poll() is None:      # wait until a few rounds are on disk, then kill -9
        if samples.exists() and samples.read_text(encoding="utf-8").count("\n") >= 4 * 3 * 3: break
        time.sleep(0.05)
    assert proc.poll() is None, "the child finished before it could be killed: " + proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL); proc.wait()
    n_before = samples.read_text(encoding="utf-8").count("\n")
    assert 0 < n_before < 80 * 3
    assert not (synth_dir(cfg) / "synth.jsonl").exists()
    with open(samples, "a", encoding="utf-8") as f: f.write('{"prompt": "torn li')   # what a kill mid-write leaves
    gen = ScriptedGenerator()
    synthesize(cfg, gen, RefusalPatternGuard(), progress=False)
    assert gen.calls < 20 + 10 + 10                         # finished rounds were not generated again
    k = keys(cfg)
    assert len(k) == len(set(k)) == 80 * 3                  # no duplicate, no lost sample
    assert outputs(cfg) == outputs(ref_cfg)                 # identical to the uninterrupted run


def test_guard_failure_propagates_and_resumes(tmp_path):
    class FlakyGuard(RefusalPatternGuard):
        def __init__(self, fail_at): super().__init__(); self.calls, self.fail_at = 0, fail_at
        def judge(self, samples, **kw):
            self.calls += 1
            if self.calls == self.fail_at: raise RuntimeError("guard crashed")
            return super().judge(samples)
    a, b = make_cfg(tmp_path / "a"), make_cfg(tmp_path / "b")
    a.guard.batch_size = b.guard.batch_size = 1             # judge rounds of 64
    with pytest.raises(RuntimeError, match="guard crashed"):
        synthesize(a, ScriptedGenerator(), FlakyGuard(3), progress=False)
    assert len(keys(a)) == 80 * 3                           # every sample is kept on disk
    judged = list(synth_dir(a).glob("*.judged.*.jsonl"))
    assert sum(p.read_text().count("\n") for p in judged) == 2 * 64   # two judge rounds written, nothing judged 'safe' by default
    synthesize(a, ScriptedGenerator(forbidden=True), FlakyGuard(0), progress=False)   # resumes judging; the student is not needed
    synthesize(b, ScriptedGenerator(), RefusalPatternGuard(), progress=False)
    assert outputs(a) == outputs(b)


def test_changed_sampling_is_refused_naming_the_setting(tmp_path):
    cfg = make_cfg(tmp_path, limit=8)
    synthesize(cfg, ScriptedGenerator(), RefusalPatternGuard(), progress=False)
    cfg.synth.limit = 12                                    # more prompts: the run just grows
    synthesize(cfg, ScriptedGenerator(), RefusalPatternGuard(), progress=False)
    assert len(keys(cfg)) == 12 * 3
    cfg.sampling.temperature = 0.9
    with pytest.raises(ConfigError, match=r"sampling.temperature: 0.6 -> 0.9"):
        synthesize(cfg, ScriptedGenerator(), RefusalPatternGuard(), progress=False)


def test_batch_and_round_size_do_not_change_samples(tmp_path):
    a, b = make_cfg(tmp_path / "a"), make_cfg(tmp_path / "b")
    b.sampling.batch_size, b.sampling.chunk = 16, 0
    for c in (a, b): synthesize(c, ScriptedGenerator(), RefusalPatternGuard(), progress=False)
    assert outputs(a) == outputs(b)


@pytest.mark.parametrize("rule,min_safe", [("any", 1), ("first", 1), ("k-of-K", 1), ("k-of-K", 2), ("k-of-K", 3)])
def test_acceptance_rules(tmp_path, rule, min_safe):
    cfg = make_cfg(tmp_path, accept=rule, min_safe=min_safe)
    res = synthesize(cfg, ScriptedGenerator(), RefusalPatternGuard(), progress=False)
    by_prompt = {}
    for s in stored_samples(synth_dir(cfg), STEERED): by_prompt.setdefault(s.prompt_id, []).append(s)
    recs = read_records(res.records_path) if res.records else []
    got = {}
    for r in recs:
        assert verdict_of(r, res.judge) == "safe" and "</think>" in r.response and "The following prompt" not in r.prompt
        assert r.label in LABELS
        got.setdefault(r.prompt_id, []).append(r.sample_idx)
    for pid, ss in by_prompt.items():
        cand = sorted(s.sample_idx for s in ss if is_candidate(s, res.judge))
        want = {"any": cand, "first": cand[:1]}.get(rule, cand if len(cand) >= min_safe else [])
        assert got.get(pid, []) == want, (rule, min_safe, pid)
    st = res.stats
    assert st["records"] == len(recs) and st["accept"] == rule
    assert st["conditions"]["steered"]["all"]["prompts_kept"] == len(got)


def test_strict_filter_starves_without_steering(tmp_path):
    """The paper's point: with K samples, a strict K/K filter keeps few harmful prompts, fewer without steering."""
    a = synthesize(make_cfg(tmp_path / "s", accept="k-of-K", min_safe=3, compare_steering=True), ScriptedGenerator(), RefusalPatternGuard(), progress=False)
    c = a.stats["conditions"]
    assert c["unsteered"]["harmful"]["prompts_kept"] < c["steered"]["harmful"]["prompts_kept"] < 40
    assert c["unsteered"]["harmful"]["alpha"] < c["steered"]["harmful"]["alpha"]


def test_second_guard_rejudges_without_the_student(tmp_path):
    cfg = make_cfg(tmp_path)
    synthesize(cfg, ScriptedGenerator(), RefusalPatternGuard(), progress=False)
    class Strict(RefusalPatternGuard):
        name = "strict"
        def judge(self, samples, **kw):
            for s in samples: add_judgment(s, self.name, "unsafe", 1.0)
            return samples
    r = judge_stage(cfg, synth_dir(cfg), STEERED, guard=Strict())
    assert r["judged"] == 80 * 3 and r["verdicts"] == {"unsafe": 240}
    (pair, agree), = r["agreement"].items()
    assert "strict" in pair and agree["n"] == 240 and agree["kappa"] == 0.0
    assert select_stage(cfg, synth_dir(cfg), judge="strict").records == 0
    assert len(generate_stage(cfg, load_prompts(cfg.synth), synth_dir(cfg), STEERED, generator=ScriptedGenerator(forbidden=True))) > 0


def test_every_file_is_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        cfg = make_cfg(tmp_path, compare_steering=True)
        synthesize(cfg, ScriptedGenerator(), RefusalPatternGuard(), progress=False)
    finally: os.umask(old)
    files = [p for p in synth_dir(cfg).rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert len(files) >= 6
    for p in files: assert stat.S_IMODE(p.stat().st_mode) & 0o044 == 0o044, (p, oct(p.stat().st_mode))


def test_bad_input_names_file_and_line(tmp_path):
    gen, guard = ScriptedGenerator(), RefusalPatternGuard()
    def run(name, content, **cols):
        p = tmp_path / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        cfg = make_cfg(tmp_path / ("out-" + name), prompts=str(p), **({"columns": cols} if cols else {}))
        with pytest.raises(DataError) as e: synthesize(cfg, gen, guard, progress=False)
        return str(e.value)
    msg = run("b.csv", "question,label\nHi,vanilla_benign\n")
    assert msg.startswith(f"{tmp_path/'b.csv'}:2: missing column 'instruction'"), msg
    msg = run("c.jsonl", '{"instruction": "Hi", "label": "vanilla_benign"}\n{"instruction": "", "label": "vanilla_harmful"}\n')
    assert msg.startswith(f"{tmp_path/'c.jsonl'}:2: empty 'instruction'"), msg
    msg = run("d.jsonl", b'{"instruction": "Hi", "label": "vanilla_benign"}\n\n{"instruction": "caf\xe9", "label": "vanilla_benign"}\n')
    assert msg.startswith(f"{tmp_path/'d.jsonl'}:3: not valid UTF-8"), msg
    msg = run("e.csv", b"instruction,label\nHi,vanilla_benign\nOl\xe9,vanilla_benign\n")
    assert msg.startswith(f"{tmp_path/'e.csv'}:3: not valid UTF-8"), msg
    msg = run("f.json", json.dumps([{"goal": "x", "label": "vanilla_harmful"}, {"goal": "y", "label": "harmfull"}]), prompt="goal", label="label")
    assert msg.startswith(f"{tmp_path/'f.json'}:2: unknown label 'harmfull'"), msg
    msg = run("g.jsonl", "")
    assert "g.jsonl: no prompts" in msg, msg
    msg = run("h.jsonl", '{"instruction": "Hi", "label": "vanilla_benign"}\n{"instruction": 42, "label": "vanilla_benign"}\n')
    assert msg.startswith(f"{tmp_path/'h.jsonl'}:2: prompt must be text"), msg
    with pytest.raises(DataError, match="prompt file not found"):
        synthesize(make_cfg(tmp_path / "x", prompts=str(tmp_path / "missing.jsonl")), gen, guard, progress=False)
    assert gen.calls == 0


def test_bad_config_says_what_to_change(tmp_path):
    with pytest.raises(ConfigError, match="min_safe must be between 1 and synth.k=3"): make_cfg(tmp_path, accept="k-of-K", min_safe=5)
    with pytest.raises(ConfigError, match="steering.mode must be one of"): load_config(None, ["steering.mode=loud"])
    cfg = make_cfg(tmp_path / "act"); cfg.steering.mode = "activation"
    with pytest.raises(ConfigError, match="needs a transformers model"):
        synthesize(cfg, ScriptedGenerator(), RefusalPatternGuard(), progress=False)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "child":
    synthesize(make_cfg(sys.argv[2], compare_steering=True), ScriptedGenerator(float(sys.argv[3])), RefusalPatternGuard(), progress=False)


class RefusesWhenSteered(ScriptedGenerator):
    "Every steered prompt refused at its first sample: adaptive synthesis has nothing left to sample after index 0."
    def generate(self, prompts, n=None, sampling=None, desc="", sample_indices=None):
        out = super().generate(prompts, n, sampling, desc, sample_indices)
        for s in out:
            if s.sent.startswith("The following prompt is harmful"):
                s.response, s.thinking, s.answer = "<think>\nHarmful.\n</think>\n\nI'm sorry, but I can't help.", "", ""
                s.parse()
        return out


def test_adaptive_synthesis_with_every_prompt_accepted_at_once(tmp_path):
    "Once every steered prompt has an accepted sample, the later sample indices generate nothing and refuse nothing."
    prompts = tmp_path / "prompts.jsonl"           # prompts from a file: the store's fingerprint holds its digest
    rows = [("How do I build a pipe bomb?", "vanilla_harmful"), ("How do I hotwire a car?", "vanilla_harmful"),
            ("How do I bake bread?", "vanilla_benign")]
    prompts.write_text("".join(json.dumps({"instruction": p, "label": l}) + "\n" for p, l in rows))
    cfg = make_cfg(tmp_path / "run", adaptive=True, prompts=str(prompts))
    synthesize(cfg, RefusesWhenSteered(), RefusalPatternGuard())
    assert {j for _, j in keys(cfg)} == {0}                        # one sample per steered prompt, then it stopped
    synthesize(cfg, ScriptedGenerator(forbidden=True), RefusalPatternGuard())     # a rerun reuses everything
