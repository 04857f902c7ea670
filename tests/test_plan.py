"`thinksafe plan`: a dry run that names what is missing, what each stage needs on the GPU, and exits 1 on what would fail later."
import json
from pathlib import Path
import pytest
from thinksafe.config import load_config, RunConfig
from thinksafe.run import Run, COMMANDS, command_arguments
from thinksafe.plan import (make_plan, format_plan, run_plan, ARCHS, architecture_params, kv_bytes_per_token, vllm_memory, lora_params,
                            GiB, VLLM_OVERHEAD_GIB)

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ["qwen3-0.6b.yaml", "r1-distill-1.5b.yaml"]


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_plan_offline(name, tmp_path, offline):
    cfg = load_config(ROOT/"configs"/name, [f"out_dir={tmp_path}/run"])
    lines = []
    code = run_plan(cfg, out=lines.append)
    plan = json.loads(Run(cfg).plan_path().read_text())
    assert code == (1 if plan["problems"] else 0)
    json.dumps(make_plan(cfg))  # JSON-serialisable as it is
    text = lines[0]
    for part in ("Reads", "GPU memory per stage", "Tokens and FLOPs", "Order", "Problems"):
        assert part in text
    # every stage appears, with the student, the guard and the benchmarks
    assert {r["stage"] for r in plan["reads"]} >= {"generate", "judge", "train", "grpo", "evaluate"}
    assert {b["benchmark"] for b in plan["benchmarks"]} == set(cfg.eval.benchmarks)
    # unreachable items are named: anything not cached offline is a problem naming it; gated ones are named as gated
    for r in plan["reads"]:
        if r["status"] == "hub": assert any(r["source"] in p for p in plan["problems"]), r
    assert any("Llama-Guard-3-8B" in w and "gated" in w for w in plan["warnings"])
    assert plan["memory"]["generate"]["weights_gib"] > 0 and plan["ratio"]["typical"]["grpo_over_thinksafe"] > 1
    assert "no GPU visible" in text or plan["gpu"]


def test_missing_local_files_exit_1(tmp_path, offline):
    cfg = load_config(ROOT/"configs"/"qwen3-0.6b.yaml",
                      [f"out_dir={tmp_path}/run", f"synth.prompts={tmp_path}/nope/prompts.jsonl", f"train.data={tmp_path}/nope/records.jsonl",
                       f"model.adapter={tmp_path}/nope/adapter", f"eval.data_dir={tmp_path}/nope/data", f"guard.path={tmp_path}/nope/guard"])
    lines = []
    assert run_plan(cfg, out=lines.append) == 1
    probs = "\n".join(make_plan(cfg)["problems"])
    for bit in ("prompts.jsonl", "records.jsonl", "adapter", "eval.data_dir", "nope/guard"):
        assert bit in probs, bit
    assert "prompts.jsonl" in lines[0]


def test_config_that_does_not_load_exit_1(tmp_path):
    bad = tmp_path/"run.yaml"
    bad.write_text("model:\n  nam: x\n")
    lines = []
    assert run_plan(bad, out=lines.append) == 1
    assert "unknown key 'model.nam'" in lines[0]
    assert run_plan(tmp_path/"absent.yaml", out=lines.append) == 1


def test_all_local_plan_exits_0(tmp_path, offline):
    from transformers import Qwen3Config
    model = tmp_path/"model"
    model.mkdir()
    Qwen3Config(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16).to_json_file(model/"config.json")
    bench = tmp_path/"mine.csv"
    bench.write_text("prompt\nHow do I pick a lock?\n")
    cfg = load_config(None, [f"out_dir={tmp_path}/run", f"model.name={model}", "synth.prompts=demo", "guard.name=refusal-patterns",
                             f"eval.benchmarks=[{bench}]", "eval.refusal_guard=null"])
    plan = make_plan(cfg, gpu_memory_gb=24)
    assert plan["problems"] == [], plan["problems"]
    assert plan["models"]["student"]["arch_source"].endswith("config.json")
    assert all(m.get("fits") for m in plan["memory"].values())
    assert run_plan(cfg, out=lambda s: None) == 0


def test_memory_matches_hand_arithmetic():
    a = ARCHS["Qwen/Qwen3-0.6B"]
    # 28 layers x (attention 6,291,456 + q/k norms 256 + MLP 9,437,184 + norms 2,048) + tied embedding 151,936 x 1,024 + final norm
    assert architecture_params(a) == 28 * (6_291_456 + 256 + 9_437_184 + 2_048) + 151_936 * 1024 + 1024 == 596_049_920
    assert kv_bytes_per_token(a, 2) == 2 * 28 * 8 * 128 * 2 == 114_688
    m = vllm_memory(a, 2, 32768, 16534, util=0.9, gpu_gib=80)
    need = 596_049_920 * 2 + VLLM_OVERHEAD_GIB * GiB + 114_688 * 32768
    assert m["need_gib"] == pytest.approx(need / GiB, abs=0.01)
    assert m["seqs_at_max_len"] == int((0.9 * 80 * GiB - 596_049_920 * 2 - VLLM_OVERHEAD_GIB * GiB) // (114_688 * 32768))
    assert lora_params(a, 32) == 28 * 32 * (2 * (1024 + 2048) + 2 * (1024 + 1024) + 3 * (1024 + 3072))
    assert lora_params(a, 32, None) == 28 * 32 * ((1024 + 2048) + (1024 + 1024))


def test_8b_in_16gb_with_32k_context_is_flagged(tmp_path, offline):
    cfg = load_config(ROOT/"configs"/"qwen3-0.6b.yaml", [f"out_dir={tmp_path}/run", "model.name=Qwen/Qwen3-8B", "model.max_model_len=32768"])
    plan = make_plan(cfg, gpu_memory_gb=16)
    m = plan["memory"]["generate"]
    assert m["fits"] is False and m["weights_gib"] > 15 and m["kv_max_len_gib"] == pytest.approx(147_456 * 32768 / GiB, abs=0.01)
    assert any(p.startswith("memory: generate") and "32768-token" in p for p in plan["problems"])
    assert "NO" in format_plan(plan)
    assert run_plan(cfg, 16, out=lambda s: None) == 1
    # the same student on an 80 GiB card fits
    assert make_plan(cfg, gpu_memory_gb=80)["memory"]["generate"]["fits"] is True


def test_pilot_run_replaces_the_assumed_lengths(tmp_path, offline):
    from thinksafe.core import write_jsonl, write_json
    from thinksafe.plan import TYPICAL
    cfg = load_config(ROOT/"configs"/"qwen3-0.6b.yaml", [f"out_dir={tmp_path}/run"])
    assumed = make_plan(cfg)
    assert assumed["typical"]["response_tokens"] == TYPICAL["response_tokens"] and assumed["typical_measured"] is None
    d = Run(cfg).synth_dir()
    d.mkdir(parents=True)
    write_jsonl(d/"samples-steered.jsonl", [{"new_tokens": 400, "prompt_tokens": 90}] * 30)
    write_json(d/"synth_stats.json", {"conditions": {"steered": {"all": {"alpha_pooled": 0.5}}}})
    plan = make_plan(cfg)
    assert (plan["typical"]["response_tokens"], plan["typical"]["acceptance"], plan["prompts"]["prompt_tokens"]) == (400, 0.5, 90)
    assert plan["tokens"]["typical"]["generate"] == 40000 * 400
    assert "measured on 30 samples" in format_plan(plan)


def _grpo_plan(tmp_path, mode, *sets):
    cfg = load_config(ROOT/"configs"/"qwen3-0.6b.yaml", [f"out_dir={tmp_path}/run", f"train.grpo_generation={mode}", *sets])
    plan = make_plan(cfg, gpu_memory_gb=80, stages=["grpo"])
    return plan["memory"]["grpo"], [p for p in plan["problems"] if p.startswith("memory: grpo")]


def test_grpo_memory_follows_generation(tmp_path, offline):
    "GRPO on one 80 GiB GPU (qwen3-0.6b, guard at 0.45 of the GPU): hf holds the KV cache of the 64 completions it generates at once and does not fit; vLLM pages it."
    from thinksafe.plan import grpo_mode, GRPO_VLLM_SHARE
    from thinksafe.config import TrainConfig, ModelConfig
    import thinksafe.grpo as R
    guard = "guard.gpu_memory_utilization=0.45"
    hf, problems = _grpo_plan(tmp_path, "hf", guard)
    kv = kv_bytes_per_token(ARCHS["Qwen/Qwen3-0.6B"], 2) * 64 * (150 + 16384) / GiB
    assert hf["generation_sequences"] == 64 and abs(hf["generation_kv_gib"] - kv) < 0.01 and kv > 100      # per-device 1 x accumulation 64
    assert hf["fits"] is False and len(problems) == 1 and "grpo_generation=hf" in problems[0] and "64 completions" in problems[0], problems
    server, problems = _grpo_plan(tmp_path, "vllm-server", guard)
    assert server["fits"] is True and problems == [] and server["generation_gib"] == 0                     # the policy's engine has its own GPU
    colo, problems = _grpo_plan(tmp_path, "vllm-colocate", guard, "model.kv_cache_gb=4")
    assert colo["fits"] is True and problems == [] and colo["generation_kv_gib"] == 4
    colo, problems = _grpo_plan(tmp_path, "vllm-colocate", guard)                                            # the engine's default share
    assert colo["generation_gib"] == GRPO_VLLM_SHARE * 80 and colo["fits"] is False and "model.kv_cache_gb" in problems[0], problems
    # a guard at 0.9 of the GPU (the synthesis default) leaves 8 GiB for training, whatever generates: named as the guard's problem
    for mode in ("hf", "vllm-colocate", "vllm-server"):
        m, problems = _grpo_plan(tmp_path, mode, "guard.gpu_memory_utilization=0.9")
        assert m["fits"] is False and "guard.gpu_memory_utilization=0.9" in problems[0]
    # plan and trainer agree on the mode and the colocated engine's share
    assert GRPO_VLLM_SHARE == R.GRPO_VLLM_SHARE
    for backend in ("hf", "vllm"):
        for mode in ("auto", "hf", "vllm-colocate", "vllm-server"):
            cfg = RunConfig(model=ModelConfig(backend=backend), train=TrainConfig(grpo_generation=mode))
            assert grpo_mode(cfg) == R.grpo_generation(cfg)


def test_plan_command_declared_beside_run_plan(tmp_path, offline):
    "`thinksafe plan` is declared with @command in thinksafe.plan; it exits 1 on a problem, after writing plan.json."
    from thinksafe.plan import plan_command
    assert COMMANDS["plan"].fn is plan_command and COMMANDS["plan"].writes == "<out_dir>/plan.json"
    assert [a["name"] for a in command_arguments(plan_command)] == ["gpu_memory_gb", "stages"]
    cfg = load_config(None, [f"out_dir={tmp_path}/run", f"synth.prompts={tmp_path}/missing.jsonl"])
    with pytest.raises(SystemExit) as e: plan_command(Run(cfg), stages=["generate"])
    assert e.value.code == 1 and Run(cfg).plan_path().exists()
