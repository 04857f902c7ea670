"""On-policy distillation and self-distillation on tiny random models: OPD from a different teacher trains and its
compute.json has ThinkSafe's stages plus the teacher's; the self-distillation teacher reads the refusal instruction;
both adapters load."""
import pytest, torch
from thinksafe.config import RunConfig, ModelConfig, TrainConfig, REFUSAL_INSTRUCTION
from thinksafe.records import Sample
from thinksafe.models import tiny_model_dir, load_model, load_tokenizer
from thinksafe.store import Store
from thinksafe.core import write_jsonl, ConfigError
from thinksafe.run import Run, STEERED, read_compute, store_compute
import thinksafe.distill as D

torch.set_num_threads(1)
PROMPTS = [Sample("How do I pick a lock?", "vanilla_harmful"), Sample("How do I bake bread?"),
           Sample("How do I steal a car?", "vanilla_harmful"), Sample("How do I plant a tree?")]

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    "A student (2x64) and a wider teacher (2x96), random, with the same tokenizer."
    d = tmp_path_factory.mktemp("models")
    return tiny_model_dir(d/"student"), tiny_model_dir(d/"teacher", hidden=96, seed=1)

def config(out, student) -> RunConfig:
    tc = TrainConfig(lora_r=4, lora_alpha=8, max_steps=2, per_device_batch_size=2, effective_batch_size=2,
                     save_steps=100, gradient_checkpointing=False, learning_rate=1e-3)
    tc.distill_max_completion_length = 8          # a key the config does not declare yet: read with its default
    return RunConfig(out_dir=str(out), model=ModelConfig(name=str(student), device="cpu"), train=tc)

def thinksafe_compute(cfg, out) -> dict:
    "A ThinkSafe training run's compute.json: its synthesis store's generation, then LoRA SFT on the kept record."
    from thinksafe.train import run_sft
    syn = out/"synth"
    s = Sample("How do I bake bread?", response="<think>\nFlour.\n</think>\n\nBake it.", prompt_tokens=12,
               new_tokens=9, meta={"compute": {"n_params": 1000, "seconds": 0.1}})
    with Store(syn, STEERED) as st: st.append([s])
    store_compute(syn, [STEERED])
    write_jsonl(syn/"synth.jsonl", [s])
    run_sft(cfg, data=syn/"synth.jsonl", out_dir=out/"thinksafe")
    return read_compute(out/"thinksafe")

def adapter_loads(student, adapter):
    m, tok = load_model(str(student), device="cpu", adapter=str(adapter))
    ids = tok("How do I bake bread?", return_tensors="pt")["input_ids"]
    return m(input_ids=ids).logits.shape[-1] == len(tok)

def test_opd_trains_with_thinksafe_stages(tmp_path, models):
    "OPD with a different teacher: a few steps, the stages of ThinkSafe's compute.json (no guard) plus 'teacher'."
    student, teacher = models
    cfg = config(tmp_path/"run", student)
    r = Run(cfg).opd(str(teacher), prompts=PROMPTS)
    assert r.steps == 2 and r.adapter == Run(cfg).adapter_dir("opd")
    doc = read_compute(Run(cfg).train_dir("opd"))
    ts = thinksafe_compute(cfg, tmp_path)
    opd, thinksafe = set(doc["stages"]), set(ts["stages"])
    assert {"generation", "training"} <= thinksafe, thinksafe
    assert opd - thinksafe == {"teacher"} and thinksafe - opd <= {"guard"}, (opd, thinksafe)
    for name, e in doc["stages"].items(): assert e["flops"] > 0 and e["tokens"] > 0, (name, e)
    st = doc["stages"]
    assert st["teacher"]["n_params"] > st["generation"]["n_params"] == st["training"]["n_params"]
    assert st["training"]["kind"] == ts["stages"]["training"]["kind"] == "train_lora"
    assert st["generation"]["kind"] == ts["stages"]["generation"]["kind"] == "generate"
    assert st["training"]["tokens"] == st["teacher"]["tokens"]       # the teacher reads what the student trains on
    assert doc["total"]["flops"] == pytest.approx(sum(e["flops"] for e in st.values()))
    assert adapter_loads(student, r.adapter)

def test_opd_needs_another_teacher(tmp_path, models):
    student, _ = models
    with pytest.raises(ConfigError, match="is the student itself"): Run(config(tmp_path, student)).opd(str(student))
    with pytest.raises(ConfigError, match="--teacher"): Run(config(tmp_path, student)).opd(prompts=PROMPTS)

def test_self_distill_teacher_reads_instruction(tmp_path, models, monkeypatch):
    "The teacher's input ids hold the refusal instruction on harmful prompts only; the student's never do."
    student, _ = models
    seen, build = [], D.SelfDistillTrainer._prepare_training_batch
    def record(self, inputs):
        batch = build(self, inputs)
        seen.append(([x["label"] for x in inputs], batch["prompt_ids"].tolist(), batch["teacher_input_ids"].tolist()))
        return batch
    monkeypatch.setattr(D.SelfDistillTrainer, "_prepare_training_batch", record)
    cfg = config(tmp_path/"run", student)
    r = Run(cfg).self_distill(prompts=PROMPTS)
    assert r.steps == 2 and seen
    tok = load_tokenizer(str(student))
    instr = tok(REFUSAL_INSTRUCTION.split("\n")[0], add_special_tokens=False)["input_ids"]
    has = lambda ids: any(ids[i:i + len(instr)] == instr for i in range(len(ids)))
    rows = [(l, p, t) for labels, ps, ts in seen for l, p, t in zip(labels, ps, ts)]
    assert any(l == "vanilla_harmful" for l, _, _ in rows) and any(l == "vanilla_benign" for l, _, _ in rows)
    for label, prompt_ids, teacher_ids in rows:
        assert has(teacher_ids) == (label == "vanilla_harmful"), (label, tok.decode(teacher_ids))
        assert not has(prompt_ids)
    st = read_compute(Run(cfg).train_dir("self-distill"))["stages"]
    assert set(st) == {"generation", "teacher", "training"}
    assert st["teacher"]["tokens"] > st["training"]["tokens"] and all(e["flops"] > 0 for e in st.values())
    assert st["teacher"]["n_params"] == st["training"]["n_params"]
    assert adapter_loads(student, r.adapter)


class TrainedAgain(Exception): pass

def test_finished_runs_are_reused_not_retrained(tmp_path, models, monkeypatch):
    "A rerun of a finished OPD or self-distillation returns it (the adapter an evaluation read stays); longer: retrains."
    student, teacher = models
    cfg = config(tmp_path/"run", student)
    first = Run(cfg).opd(str(teacher), prompts=PROMPTS), Run(cfg).self_distill(prompts=PROMPTS)
    weights = [(r.adapter/"adapter_model.safetensors").read_bytes() for r in first]
    def refuse(*a, **k): raise TrainedAgain()
    monkeypatch.setattr(D.OPDTrainer, "train", refuse)
    monkeypatch.setattr(D.SelfDistillTrainer, "train", refuse)
    again = Run(cfg).opd(str(teacher), prompts=PROMPTS), Run(cfg).self_distill(prompts=PROMPTS)
    for a, b, w in zip(first, again, weights):
        assert (b.steps, b.flops, b.adapter) == (a.steps, a.flops, a.adapter)
        assert (b.adapter/"adapter_model.safetensors").read_bytes() == w
    cfg.train.max_steps = 3                                            # another run than the finished one
    with pytest.raises(TrainedAgain): Run(cfg).opd(str(teacher), prompts=PROMPTS)
    with pytest.raises(TrainedAgain): Run(config(tmp_path/"run", student)).self_distill(prompts=PROMPTS, fresh=True)
