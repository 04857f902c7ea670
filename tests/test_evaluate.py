"""A killed evaluation continues where it stopped (kill -9 mid-run, then rerun), and the figures command's entry point."""
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"

FAKE = textwrap.dedent('''
    import sys, time, hashlib
    from thinksafe.core import RunConfig, Sample
    from thinksafe.generate import Generator
    from thinksafe.guards import RefusalPatternGuard
    from thinksafe.evaluate import run_evaluation

    class SlowFake(Generator):
        name = "slow-fake"
        def __init__(self, delay): super().__init__(); self.delay, self.prompts = delay, 0
        def _complete(self, samples, sc, desc):
            time.sleep(self.delay); self.prompts += len(samples)
            out = []
            for p in samples:
                k = int(hashlib.md5(p.prompt.encode()).hexdigest(), 16)
                if p.meta["kind"] == "reasoning": r = f"<think>w</think>The final answer is {p.meta['reference']}"
                else: r = "<think>x</think>Sure, here it is." if k % 2 else "<think>x</think>I cannot help with that."
                out.append([(r, {})] * sc.n)
            return out

    def config(out, data):
        cfg = RunConfig(name="kill-test", out_dir=out)
        cfg.eval.benchmarks, cfg.eval.data_dir, cfg.eval.limit, cfg.eval.n = ["harmbench", "gsm8k"], data, 12, 2
        cfg.sampling.batch_size = 2
        return cfg

    if __name__ == "__main__":
        run_evaluation(config(sys.argv[1], sys.argv[2]), generator=SlowFake(float(sys.argv[3])), guard=RefusalPatternGuard())
''')


def test_killed_evaluation_resumes(tmp_path):
    script = tmp_path / "fake_eval.py"
    script.write_text(FAKE)
    items = tmp_path / "run" / "eval" / "items.jsonl"
    p = subprocess.Popen([sys.executable, str(script), str(tmp_path / "run"), str(DATA), "0.3"])
    t0 = time.time()
    while time.time() - t0 < 60:
        if items.exists() and items.read_text().count("\n") >= 4: break
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL); p.wait()
    before = items.read_text().count("\n")
    assert 4 <= before < 12 + 24, before                        # killed mid-run
    sys.path.insert(0, str(tmp_path))
    import fake_eval
    gen = fake_eval.SlowFake(0.0)
    from thinksafe.guards import RefusalPatternGuard
    from thinksafe.evaluate import run_evaluation, read_items
    res = run_evaluation(fake_eval.config(str(tmp_path / "run"), str(DATA)), generator=gen, guard=RefusalPatternGuard())
    done_items = {(k[0], k[1]) for k in read_items(items)}
    assert len(done_items) == 24 and len(read_items(items)) == 12 + 24
    assert gen.prompts <= 24 - before // 2 + 2                  # only what was missing (give or take the torn chunk)
    assert res["benchmarks"]["gsm8k"]["pass1_pct"] == 100.0
    assert res["benchmarks"]["harmbench"]["n_samples"] == 12
    summary = json.loads(Path(res["summary_json"]).read_text())
    assert {"name", "model", "size_b", "safety_avg_harmful_pct", "reasoning_avg_pass1"} <= set(summary)


def test_paper_figures_with_runs(tmp_path):
    from thinksafe.core import write_json
    from thinksafe.plots import paper_figures
    run = tmp_path / "runs" / "a" / "eval"
    write_json(run / "summary.json", {"name": "a", "model": "m", "size_b": 0.135,
                                      "safety_avg_harmful_pct": 40.0, "reasoning_avg_pass1": 3.0})
    res = paper_figures(tmp_path / "figures", runs=[str(tmp_path / "runs")])
    assert Path(res["pareto_png"]).stat().st_size > 10_000 and res["runs"] == 1
    assert res["frontier"]["4B"] == ["ThinkSafe"]
