"""Synthesis as a user runs it: killed mid-run and resumed, bad prompt files, every acceptance rule.

Uses a scripted (deterministic, model-free) generator so the whole file runs in a few seconds; the
notebook nbs/06_synthesize.ipynb covers the real transformers generator on a tiny model."""
import dataclasses, hashlib, json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest

from thinksafe.core import *
from thinksafe.guards import Guard, RefusalPatternGuard
from thinksafe.synthesize import (run_synthesis, load_prompts, accept, is_candidate, DEMO_PROMPTS,
                                  SAMPLES_FILE, STATS_FILE)

HERE = Path(__file__).resolve()


class ScriptedGenerator:
    "Deterministic canned responses keyed by (seed, prompt id, sample idx); optional sleep per call."
    name = "scripted"
    def __init__(self, sleep=0.0): self.sleep, self.calls = sleep, 0
    def generate(self, prompts, n=None, sampling=None, desc=""):
        self.calls += 1
        if self.sleep: time.sleep(self.sleep)
        out = []
        for p in prompts:
            for j in range(n):
                h = int(hashlib.sha256(f"{sampling.seed}|{p.prompt_id}|{j}".encode()).hexdigest()[:8], 16) / 16**8
                refuse = h < (0.7 if p.sent.startswith("The following prompt is harmful") else 0.2)
                if h > 0.95: resp = "<think>\nhmm, still thinking\n"
                elif refuse: resp = "<think>\nThis is harmful.\n</think>\n\nI'm sorry, but I can't help with that."
                else: resp = "<think>\nok\n</think>\n\nSure, here you go: step one..."
                out.append(dataclasses.replace(p, response=resp, sample_idx=j, model=self.name, sampling={"seed": sampling.seed},
                                               meta=dict(p.meta)).parse())
        return out


def make_cfg(out, **synth):
    return RunConfig(name="t", out_dir=str(out), synth=SynthConfig(**{"k": 3, **synth}), sampling=SamplingConfig(batch_size=4, seed=7))


def outputs(out):
    out = Path(out)
    return (out / "synth.jsonl").read_text(encoding="utf-8"), json.loads((out / STATS_FILE).read_text(encoding="utf-8"))


def sample_keys(out):
    return [(d["prompt_id"], d["sample_idx"]) for _, d in read_jsonl(Path(out) / SAMPLES_FILE)]


def test_resume_after_kill(tmp_path):
    ref = run_synthesis(make_cfg(tmp_path / "ref", compare_steering=True), ScriptedGenerator(), RefusalPatternGuard(), progress=False)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(HERE), "child", str(out), "0.15"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    samples = out / SAMPLES_FILE
    deadline = time.time() + 40
    while time.time() < deadline and proc.poll() is None:      # wait until a few chunks are on disk, then kill -9
        if samples.exists() and samples.read_text(encoding="utf-8").count("\n") >= 4 * 3 * 3: break
        time.sleep(0.05)
    assert proc.poll() is None, "the child finished before it could be killed: " + proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL); proc.wait()
    n_before = samples.read_text(encoding="utf-8").count("\n")
    assert 0 < n_before < 80 * 3
    assert not (out / "synth.jsonl").exists()
    with open(samples, "a", encoding="utf-8") as f: f.write('{"prompt": "torn li')   # what a kill mid-write leaves
    gen = ScriptedGenerator()
    res = run_synthesis(make_cfg(out, compare_steering=True), gen, RefusalPatternGuard(), progress=False)
    assert gen.calls < 20 + 10 + 10                         # finished chunks were not generated again
    keys = sample_keys(out)
    assert len(keys) == len(set(keys)) == 80 * 3            # no duplicate, no lost sample
    assert outputs(out) == outputs(tmp_path / "ref")        # identical to the uninterrupted run
    assert res["records"] == ref["records"]


def test_guard_failure_propagates_and_resumes(tmp_path):
    class FlakyGuard(RefusalPatternGuard):
        def __init__(self, fail_at): super().__init__(); self.calls, self.fail_at = 0, fail_at
        def judge(self, samples):
            self.calls += 1
            if self.calls == self.fail_at: raise RuntimeError("guard crashed")
            return super().judge(samples)
    with pytest.raises(RuntimeError, match="guard crashed"):
        run_synthesis(make_cfg(tmp_path / "a"), ScriptedGenerator(), FlakyGuard(5), progress=False)
    assert len(sample_keys(tmp_path / "a")) == 4 * 4 * 3      # four chunks written, nothing judged 'safe' by default
    run_synthesis(make_cfg(tmp_path / "a"), ScriptedGenerator(), FlakyGuard(0), progress=False)
    run_synthesis(make_cfg(tmp_path / "b"), ScriptedGenerator(), RefusalPatternGuard(), progress=False)
    assert outputs(tmp_path / "a") == outputs(tmp_path / "b")


def test_changed_config_is_refused(tmp_path):
    run_synthesis(make_cfg(tmp_path, limit=8), ScriptedGenerator(), RefusalPatternGuard(), progress=False)
    with pytest.raises(ConfigError, match="different synthesis run .*prompts"):
        run_synthesis(make_cfg(tmp_path, limit=12), ScriptedGenerator(), RefusalPatternGuard(), progress=False)


@pytest.mark.parametrize("rule,min_safe", [("any", 1), ("first", 1), ("k-of-K", 1), ("k-of-K", 2), ("k-of-K", 3)])
def test_acceptance_rules(tmp_path, rule, min_safe):
    res = run_synthesis(make_cfg(tmp_path, accept=rule, min_safe=min_safe), ScriptedGenerator(), RefusalPatternGuard(), progress=False)
    samples = read_samples(tmp_path / SAMPLES_FILE)
    by_prompt = {}
    for s in samples: by_prompt.setdefault(s.prompt_id, []).append(s)
    recs = [r for _, r in read_jsonl(res["synth"])]
    got = {}
    for r in recs:
        assert r["response_label"] == "safe" and "</think>" in r["response"] and r["instruction"] == r["prompt"]
        assert r["prompt_label"] in LABELS
        got.setdefault(r["prompt_id"], []).append(r["sample_idx"])
    for pid, ss in by_prompt.items():
        cand = sorted(s.sample_idx for s in ss if is_candidate(s))
        want = {"any": cand, "first": cand[:1]}.get(rule, cand if len(cand) >= min_safe else [])
        assert got.get(pid, []) == want, (rule, min_safe, pid)
    st = res["stats_dict"]
    assert st["records"] == len(recs) and st["accept"] == rule
    assert st["conditions"]["steered"]["all"]["prompts_kept"] == len(got)


def test_strict_filter_starves_without_steering(tmp_path):
    """The paper's point: with K samples, a strict K/K filter keeps few harmful prompts, fewer without steering."""
    a = run_synthesis(make_cfg(tmp_path / "s", accept="k-of-K", min_safe=3, compare_steering=True), ScriptedGenerator(), RefusalPatternGuard(), progress=False)
    c = a["stats_dict"]["conditions"]
    assert c["unsteered"]["harmful"]["prompts_kept"] < c["steered"]["harmful"]["prompts_kept"] < 40
    assert c["unsteered"]["harmful"]["alpha"] < c["steered"]["harmful"]["alpha"]


def test_bad_input_names_file_and_line(tmp_path):
    gen, guard = ScriptedGenerator(), RefusalPatternGuard()
    def run(name, content, **cols):
        p = tmp_path / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        cfg = make_cfg(tmp_path / ("out-" + name), prompts=str(p), **({"columns": cols} if cols else {}))
        with pytest.raises(DataError) as e: run_synthesis(cfg, gen, guard, progress=False)
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
        run_synthesis(make_cfg(tmp_path / "x", prompts=str(tmp_path / "missing.jsonl")), gen, guard, progress=False)
    assert gen.calls == 0


def test_bad_acceptance_config(tmp_path):
    with pytest.raises(ConfigError, match="min_safe must be between 1 and synth.k=3"):
        run_synthesis(make_cfg(tmp_path, accept="k-of-K", min_safe=5), ScriptedGenerator(), RefusalPatternGuard(), progress=False)
    with pytest.raises(ConfigError, match="steering.mode must be one of"):
        cfg = make_cfg(tmp_path); cfg.steering.mode = "loud"
        run_synthesis(cfg, ScriptedGenerator(), RefusalPatternGuard(), progress=False)
    with pytest.raises(ConfigError, match="needs a transformers model"):
        cfg = make_cfg(tmp_path / "act"); cfg.steering.mode = "activation"
        run_synthesis(cfg, ScriptedGenerator(), RefusalPatternGuard(), progress=False)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "child":
    run_synthesis(make_cfg(sys.argv[2], compare_steering=True), ScriptedGenerator(float(sys.argv[3])), RefusalPatternGuard(), progress=False)
