"`thinksafe preflight`: alpha with and without the refusal instruction, the tilt omega, the expected yield, the verdict."
import dataclasses, hashlib, json, math
from pathlib import Path
import numpy as np
import pytest
from thinksafe import preflight as pf
from thinksafe.config import RunConfig, ModelConfig, SynthConfig
from thinksafe.guards import RefusalPatternGuard
from thinksafe.records import Sample
from thinksafe.store import sample_seed
from thinksafe.run import Run
from thinksafe.stats import tilted_acceptance as tilt, odds
from thinksafe.preflight import (woolf, mantel_haenszel, records_moments, expected_yield, yield_first, yield_any, verdict,
                                 preflight_stats, format_preflight, check_against_synthesis, VERDICTS, PRE_STEERED, PRE_PLAIN)

REFUSE = "<think>\nThis is harmful.\n</think>\n\nI'm sorry, but I can't help with that."
COMPLY = "<think>\nok\n</think>\n\nSure: step one..."


class Tilted:
    "A scripted student following the tilt assumption exactly: base acceptance p(x) from the prompt id; odds x omega with the instruction."
    n_params = 1000
    def __init__(self, omega, lo=0.02, hi=0.4, log=None):
        self.omega, self.lo, self.hi, self.log, self.name = omega, lo, hi, log if log is not None else [], f"tilted-{omega}"
    def base(self, s): return self.lo + (self.hi - self.lo) * int(s.prompt_id[:8], 16) / 16**8
    def generate(self, prompts, n=None, sampling=None, desc="", sample_indices=None):
        self.log.append(("generate", len(prompts)))
        out = []
        for p in prompts:
            q = tilt(self.base(p), self.omega) if p.steering != "none" else self.base(p)
            for j in (range(n) if sample_indices is None else sample_indices):
                h = int(hashlib.sha256(f"{sampling.seed}|{p.prompt_id}|{j}|{p.steering}".encode()).hexdigest()[:12], 16) / 16**12
                out.append(dataclasses.replace(p, response=REFUSE if h < q else COMPLY, sample_idx=j, model=self.name, new_tokens=8, prompt_tokens=8,
                                               seed=sample_seed(sampling.seed, p.prompt_id, j), thinking="", answer="", think_closed=False).parse())
        return out
    def close(self): self.log.append(("close generator",))


class LoggingGuard(RefusalPatternGuard):
    def __init__(self, log): super().__init__(); self.log = log
    def judge(self, samples, **kw):
        self.log.append(("judge", len(samples)))
        return super().judge(samples, **kw)
    def close(self): self.log.append(("close guard",))


def _cfg(tmp_path, **kw):
    return RunConfig(out_dir=str(tmp_path), model=ModelConfig(name="tilted-student"), **kw)


def run_preflight(cfg, n_prompts=32, **kw):
    "The preflight's whole result, through `Run.preflight`."
    return Run(cfg).preflight(n_prompts, **kw).result


# ---- the tilt, omega and its interval -------------------------------------------------------------------------------

def test_tilt_multiplies_the_odds():
    for a in (0.001, 0.05, 0.3, 0.9):
        for w in (0.5, 1, 3, 20):
            assert odds(tilt(a, w)) / odds(a) == pytest.approx(w)


def test_mantel_haenszel_by_hand():
    # R = 3*3/8 + 2*4/10, S = 1*1/8 + 4*0/10
    mh = mantel_haenszel([(3, 1, 1, 3), (2, 4, 0, 4)])
    assert mh["omega"] == pytest.approx((9 / 8 + 8 / 10) / (1 / 8))
    assert not mh["smoothed"] and mh["informative"] == 2
    # a zero total is smoothed (0.5 in each cell of strata with a zero) and stays finite
    z = mantel_haenszel([(4, 0, 0, 4), (2, 2, 0, 4)])
    assert z["smoothed"] and math.isfinite(z["omega"]) and z["ci"][0] > 1
    assert mantel_haenszel([])["omega"] is None
    # Woolf with Haldane-Anscombe
    w = woolf(0, 8, 0, 8)
    assert w["omega"] == pytest.approx(1.0) and w["ci"][0] < 1 < w["ci"][1]


def test_pooled_table_is_attenuated_mh_is_not():
    "With heterogeneous p(x), the pooled odds ratio is pulled toward 1 (non-collapsibility); Mantel-Haenszel recovers omega."
    tabs = [(1000 * tilt(a, 6), 1000 * (1 - tilt(a, 6)), 1000 * a, 1000 * (1 - a)) for a in np.linspace(0.01, 0.9, 15)]
    assert mantel_haenszel(tabs)["omega"] == pytest.approx(6, rel=1e-6)
    assert woolf(*np.sum(tabs, 0))["omega"] < 5


@pytest.mark.parametrize("omega,k", [(1, 8), (4, 8), (4, 4), (10, 8)])
def test_mh_interval_covers_the_true_omega(omega, k):
    "Simulated preflights of 32 prompts under the tilt assumption: the 95% interval contains omega in about 95% of them."
    rng = np.random.default_rng(omega * 100 + k)
    hits, reps = 0, 400
    for _ in range(reps):
        p = rng.uniform(0.02, 0.5, 32)
        a1, a0 = rng.binomial(k, tilt(p, omega)), rng.binomial(k, p)
        lo, hi = mantel_haenszel(list(zip(a1, k - a1, a0, k - a0)))["ci"]
        hits += lo <= omega <= hi
    assert hits / reps >= 0.9, hits / reps


# ---- the yield ----------------------------------------------------------------------------------------------------------

def test_yield_by_hand():
    assert yield_first(0.25, 8) == pytest.approx(1 - 0.75**8)
    assert yield_any(0.25, 8) == 2
    # 2 of 8 accepted, K = 4: the chance a random 4-subset holds an accepted one, 1 - C(6,4)/C(8,4) = 55/70
    assert records_moments(2, 8, 4, "first")[0] == pytest.approx(55 / 70)
    assert records_moments(2, 8, 4, "any")[0] == pytest.approx(1.0)
    assert records_moments(2, 8, 8, "first")[0] == pytest.approx(1.0)          # K = n: the prompt did yield
    assert records_moments(2, 8, 20, "first")[0] == pytest.approx(yield_first(0.25, 20))   # K > n: plug-in
    # k-of-K with m = 2 among K = 2 from 2 of 4: both accepted only when the subset is the accepted pair: 2 * 1/6
    assert records_moments(2, 4, 2, "k-of-K", 2)[0] == pytest.approx(2 / 6)
    # the pool total: pool size times the mean over prompts
    y = expected_yield([2, 0, 8], [8, 8, 8], K=4, pool_size=300, rule="first")
    assert y["records"] == pytest.approx(300 * (55 / 70 + 0 + 1) / 3)
    assert y["records_pi"][0] <= y["records_ci"][0] <= y["records"] <= y["records_ci"][1] <= y["records_pi"][1] <= 300
    assert expected_yield([2, 0, 8], [8, 8, 8], K=4, pool_size=300, rule="any")["records"] == pytest.approx(300 * (1 + 0 + 4) / 3)


def test_yield_estimate_is_unbiased():
    "Averaged over preflights, the estimate of 1-(1-alpha)^K matches the formula (the plug-in would not)."
    rng, alpha, n, K = np.random.default_rng(0), 0.15, 8, 4
    a = rng.binomial(n, alpha, 20000)
    est = np.mean([records_moments(int(x), n, K, "first")[0] for x in a])
    plug = np.mean([yield_first(x / n, K) for x in a])
    assert est == pytest.approx(yield_first(alpha, K), abs=0.01)
    assert abs(plug - yield_first(alpha, K)) > 0.01


# ---- the verdict --------------------------------------------------------------------------------------------------------

def test_verdict_rules():
    enough, marginal, none = VERDICTS
    assert verdict([2.5, 9], [0.5, 0.9], [0, 0.1])[0] == enough
    assert verdict([1.9, 9], [0.5, 0.9], [0, 0.1])[0] == marginal           # omega not surely >= 2
    assert verdict([2.5, 9], [0.45, 0.9], [0, 0.1])[0] == marginal          # coverage not surely >= 0.5
    assert verdict([0.7, 1.4], [0.5, 0.9], [0, 0.3])[0] == none             # omega about 1
    assert verdict([0.7, 1.4], [0.8, 1.0], [0.6, 0.9])[0] == enough         # already safe without the instruction
    assert verdict([5, 50], [0.0, 0.09], [0, 0.01])[0] == none              # nothing to keep
    assert verdict(None, [0.3, 0.9], [0, 0.3])[0] == marginal
    assert all(isinstance(r, str) for r in verdict([0.5, 30], [0.2, 0.9], [0, 0.3])[1])


# ---- end to end through the stages -------------------------------------------------------------------------------------

def test_known_tilt_end_to_end(tmp_path):
    cfg = _cfg(tmp_path, synth=SynthConfig(k=2))
    res = run_preflight(cfg, n_prompts=40, k=50, generator=Tilted(5), guard=RefusalPatternGuard(), progress=False)
    lo, hi = res["omega"]["ci"]
    assert lo <= 5 <= hi
    assert res["verdict"] == VERDICTS[0]
    out = Run(cfg).preflight_dir()
    assert out == Path(tmp_path)/"preflight"/"tilted-student" and Path(res["json"]) == out/"preflight.json"
    for name in (PRE_STEERED, PRE_PLAIN): assert (out/f"{name}.jsonl").exists()
    saved = json.loads((out/"preflight.json").read_text())
    assert saved["verdict"] == res["verdict"] and "git_commit" in saved and "thinksafe_version" in saved
    assert len(saved["per_prompt"]) == 40 and all(r["steered"][1] == 50 and r["plain"][1] == 50 for r in saved["per_prompt"])
    assert {(y["rule"], y["K"]) for y in saved["yield"]} == {(r, k) for r in ("first", "any") for k in (1, 2, 50)}
    assert json.loads((out/"compute.json").read_text())["stages"]["generation"]["tokens"] > 0
    text = format_preflight(res)
    assert "verdict: enough latent safety" in text and "Mantel-Haenszel" in text and "rule first K=2" in text


def test_omega_one_is_none(tmp_path):
    res = run_preflight(_cfg(tmp_path), n_prompts=40, k=50, generator=Tilted(1), guard=RefusalPatternGuard(), progress=False)
    assert res["omega"]["ci"][0] <= 1 <= res["omega"]["ci"][1]
    assert res["verdict"] == "none: external supervision needed"


def test_resumes_and_one_model_at_a_time(tmp_path, monkeypatch):
    log = []
    monkeypatch.setattr(pf, "make_generator", lambda mc, sc=None: Tilted(3, log=log))
    monkeypatch.setattr(pf, "make_judge", lambda gc: LoggingGuard(log))
    cfg = _cfg(tmp_path)
    res = run_preflight(cfg, n_prompts=8, k=6, progress=False)
    kinds = [e[0] for e in log]
    assert kinds.index("close generator") < kinds.index("judge")        # the student leaves before the guard judges
    assert kinds[-1] == "close guard" and kinds.count("close generator") == 1
    log.clear()
    again = run_preflight(cfg, n_prompts=8, k=6, progress=False)
    assert not any(e[0] in ("generate", "judge") for e in log)            # nothing left to do
    assert again["omega"] == res["omega"]
    log.clear()
    more = run_preflight(cfg, n_prompts=12, k=6, progress=False)          # more prompts extend the same set
    assert [e for e in log if e[0] == "generate"] == [("generate", 4), ("generate", 4)]
    assert more["prompts"] == 12


def test_check_against_synthesis(tmp_path):
    cfg = _cfg(tmp_path, synth=SynthConfig(k=3, accept="first"))
    pre = run_preflight(cfg, n_prompts=24, k=12, generator=Tilted(4), guard=RefusalPatternGuard(), progress=False)
    syn = Run(cfg).synthesize(generator=Tilted(4), guard=RefusalPatternGuard(), progress=False)
    chk = check_against_synthesis(pre["json"], syn.stats_path)
    assert (chk["K"], chk["rule"], chk["prompts"]) == (3, "first", 40)
    assert chk["inside"], chk
    # a synthesis that kept far fewer than predicted is flagged
    st = json.loads(Path(syn.stats_path).read_text())
    st["conditions"]["steered"]["harmful"]["records"] = 0
    assert not check_against_synthesis(pre, st)["inside"]
    # adaptive sampling keeps the first accepted sample: predicted under 'first' whatever synth.accept says
    st.update(adaptive=True, accept="any")
    assert check_against_synthesis(pre, st)["rule"] == "first"


def test_no_harmful_prompts(tmp_path):
    from thinksafe.core import DataError
    with pytest.raises(DataError, match="no harmful prompts"):
        run_preflight(_cfg(tmp_path, synth=SynthConfig(labels=["vanilla_benign"])), generator=Tilted(2), guard=RefusalPatternGuard(), progress=False)


def test_cli_preflight_checks_a_synthesis(tmp_path, monkeypatch, capsys):
    "`thinksafe preflight --check synth_stats.json` prints the table, the verdict and whether the synthesis kept what it predicted."
    from thinksafe import cli
    cfg = _cfg(tmp_path, synth=SynthConfig(k=3, accept="first"))
    syn = Run(cfg).synthesize(generator=Tilted(4), guard=RefusalPatternGuard(), progress=False)
    monkeypatch.setattr(pf, "make_generator", lambda mc, sc=None: Tilted(4))
    monkeypatch.setattr(pf, "make_judge", lambda gc: RefusalPatternGuard())
    cli.main(["preflight", "--set", f"out_dir={tmp_path}", "--set", "model.name=tilted-student", "--set", "synth.k=3",
              "--prompts", "24", "--k", "12", "--check", str(syn.stats_path)])
    out = capsys.readouterr().out
    assert "verdict:" in out and "Mantel-Haenszel" in out
    assert f"synthesis {syn.stats_path}: kept" in out and ("inside" in out.split("kept")[-1])


def test_preflight_command_declared_beside_run_preflight():
    "`thinksafe preflight` is declared with @command in thinksafe.preflight; its flags come from the signature."
    from thinksafe.run import COMMANDS, command_arguments
    assert COMMANDS["preflight"].fn is pf.preflight_command and COMMANDS["preflight"].loads_student
    assert [a["name"] for a in command_arguments(pf.preflight_command)] == ["prompts", "k", "pool_size", "check"]
    from thinksafe import stats
    assert not hasattr(pf, "tilt") and not hasattr(pf, "_boot") and pf.odds is stats.odds   # one copy, in thinksafe.stats
