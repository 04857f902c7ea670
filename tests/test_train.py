"""Training: ids as sampled, paper configs, loss reductions, packed batches, compute accounting, GRPO settings, and a
run that survives a hard kill (SIGKILL right after a checkpoint resumes from it on rerun)."""
import copy, json, subprocess, sys, textwrap
from pathlib import Path
import pytest, torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
RECS = [{"prompt": "Bake bread?", "response": "<think>\nflour and water</think>\n\nMix, knead, bake.", "label": "vanilla_benign"},
        {"prompt": "Make a bomb?", "response": "<think>\nno</think>\n\nI can't help with that, it could hurt people.", "label": "vanilla_harmful"}]

@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    from thinksafe.models import tiny_model
    return tiny_model()

@pytest.mark.parametrize("fmt", ["qwen3", "r1", "system", "none"])
def test_trained_ids_are_sampled_ids(fmt, tiny, tmp_path):
    "The trainer's ids = the generator's prompt encoding + the response ids + EOS (R1: one BOS, not two)."
    from thinksafe.config import TrainConfig
    from thinksafe.models import styled_tokenizer, chat_prompt, generation_prefix
    from thinksafe.train import ThinkSafeSFTTrainer, sft_config, sft_dataset, lora_config
    tok = styled_tokenizer(fmt)
    tc = TrainConfig(lora_r=4, lora_alpha=8, max_steps=1, gradient_checkpointing=False)
    tr = ThinkSafeSFTTrainer(copy.deepcopy(tiny[0]), args=sft_config(tc, tmp_path), processing_class=tok,
                             train_dataset=sft_dataset(RECS, tok, fmt), peft_config=lora_config(tc))
    pre = generation_prefix(fmt)
    for row, r in zip(tr.train_dataset, RECS):
        want = (tok(chat_prompt(tok, r["prompt"], fmt), add_special_tokens=False)["input_ids"]
                + tok(r["response"][len(pre):], add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
        assert row["input_ids"] == want
        if fmt == "r1": assert row["input_ids"].count(tok.bos_token_id) == 1

@pytest.mark.parametrize("name", ["qwen3-0.6b", "r1-distill-1.5b"])
def test_paper_configs(name, tmp_path):
    from thinksafe.config import load_config, flat_config, PAPER
    from thinksafe.train import sft_config, lora_config
    from thinksafe.grpo import grpo_config
    cfg = load_config(ROOT/"configs"/f"{name}.yaml")
    flat = flat_config(cfg)
    assert {k: flat[k] for k in PAPER if flat[k] != PAPER[k]} == ({"sampling.top_k": 0} if name.startswith("r1") else {})
    assert lora_config(cfg.train).target_modules is None                      # PEFT's default: q_proj, v_proj
    assert cfg.eval.max_new_tokens == 32768 and cfg.sampling.max_new_tokens == 16384 and cfg.model.max_model_len > 32768
    for world in (1, 2, 4, 8):
        a = sft_config(cfg.train, tmp_path, world=world)
        assert a.per_device_train_batch_size * a.gradient_accumulation_steps * world == 8
        g = grpo_config(cfg.train, tmp_path, world=world)
        assert g.per_device_train_batch_size * g.gradient_accumulation_steps * world == 64
        assert (g.loss_type, g.num_generations, g.beta, g.epsilon, g.temperature, g.max_completion_length, g.reward_weights) == \
               ("grpo", 8, 0.04, 0.2, 0.7, 16384, [1.0, 1.0])

def test_effective_batch_divides():
    from thinksafe.config import TrainConfig
    from thinksafe.core import ConfigError
    from thinksafe.train import grad_accum
    tc = TrainConfig(per_device_batch_size=2)
    assert [grad_accum(tc, w) for w in (1, 2, 4)] == [4, 2, 1]
    with pytest.raises(ConfigError, match="not divisible"): grad_accum(tc, 3)
    with pytest.raises(ConfigError, match="kl_reduction"): TrainConfig(kl_reduction="mean")

def _perturbed(tiny):
    from peft import LoraConfig, get_peft_model
    pm = get_peft_model(copy.deepcopy(tiny[0]), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n: p.normal_(0, 0.5)
    return pm

def _examples(tok):
    from thinksafe.models import format_example
    from thinksafe.train import tokenize_example
    return [tokenize_example(tok, *format_example(tok, r["prompt"], r["response"])) for r in RECS]

def test_kl_reductions_by_hand(tiny):
    "token = (sum CE + sum KL) / N; sequence = mean over examples of each example's token mean; packed = padded."
    from thinksafe.train import SFTCollator, response_losses, reduce_losses
    pm, tok = _perturbed(tiny), tiny[1]
    exs = _examples(tok)
    pad = SFTCollator(tok.pad_token_id, padding_free=False)(exs)
    with torch.no_grad():
        ls = F.log_softmax(pm(input_ids=pad["input_ids"], attention_mask=pad["attention_mask"]).logits, -1)[:, :-1]
        with pm.disable_adapter(): lb = F.log_softmax(pm(input_ids=pad["input_ids"], attention_mask=pad["attention_mask"]).logits, -1)[:, :-1]
    tgt = pad["labels"][:, 1:]; m = tgt.ne(-100)
    kl0 = (lb[0].exp() * (lb[0] - ls[0])).sum(-1)[m[0]]                                   # example 0 (benign): KL
    ce1 = -ls[1].gather(-1, tgt[1].clamp(min=0)[:, None]).squeeze(-1)[m[1]]               # example 1 (harmful): CE
    hand = {"token": (kl0.sum() + ce1.sum()) / (len(kl0) + len(ce1)), "sequence": (kl0.mean() + ce1.mean()) / 2}
    assert abs(hand["token"] - hand["sequence"]) > 1e-3
    for packed in (True, False):
        b = SFTCollator(tok.pad_token_id, padding_free=packed)([{**e, "use_kl": k} for e, k in zip(exs, (1, 0))])
        with torch.no_grad():
            r = response_losses(pm, b["input_ids"], b["labels"], b.get("attention_mask"), b.get("position_ids"), b["use_kl"], b["example"], kl_chunk=5)
        for red in ("token", "sequence"):
            assert abs(reduce_losses(r, red).item() - hand[red].item()) < 1e-4, (packed, red)

def test_packed_loss_equals_previous_path(tiny):
    "Per example, the new path (packed row, logits at trained positions) gives the old path's loss (padded, HF model(...).loss)."
    from thinksafe.train import SFTCollator, response_losses, reduce_losses
    pm, tok = _perturbed(tiny), tiny[1]
    exs = _examples(tok)
    packed = SFTCollator(tok.pad_token_id)(exs)
    with torch.no_grad():
        r = response_losses(pm, packed["input_ids"], packed["labels"], position_ids=packed["position_ids"], example=packed["example"])
        for i, e in enumerate(exs):
            b = SFTCollator(tok.pad_token_id, padding_free=False)(exs)
            old = pm(input_ids=b["input_ids"][i:i+1], attention_mask=b["attention_mask"][i:i+1], labels=b["labels"][i:i+1]).loss
            new = r["terms"][r["example"] == i].mean()
            assert abs(old.item() - new.item()) < 1e-4, (i, old.item(), new.item())

def test_training_flops_are_lora():
    from thinksafe.train import training_entry
    e = training_entry(1000, 10, 1.0, forward_tokens=4)
    assert e["flops"] == 4 * 1000 * 10 + 2 * 1000 * 4

def test_format_reward_is_the_reference_rule():
    from thinksafe.grpo import think_format_reward
    assert think_format_reward(["<think>\na</think>\n\nb", "<think>a</think><think>b</think>", "a</think>b", "<think>\nopen"]) == [1.0, 0.0, 0.0, 0.0]
    assert think_format_reward(["a</think>\n\nb", "<think>a</think>b", "a"], prefix="<think>\n") == [1.0, 0.0, 0.0]   # R1: prompt opened <think>

SCRIPT = textwrap.dedent("""
    import os, sys, json, torch
    from pathlib import Path
    torch.set_num_threads(1)
    from thinksafe.core import *
    from thinksafe.config import *
    from thinksafe.models import tiny_model_dir
    import thinksafe.train as T
    out, kill_at = Path(sys.argv[1]), int(sys.argv[2])
    if kill_at:
        orig = T.ComputeCallback.on_save
        def on_save(self, args, state, control, **kw):
            orig(self, args, state, control, **kw)
            if state.global_step >= kill_at: os.kill(os.getpid(), 9)   # die like an OOM-killed job
        T.ComputeCallback.on_save = on_save
    recs = [{"prompt": f"question {i}?", "response": f"<think>\\nthink {i}</think>\\n\\nanswer {i}", "label": "vanilla_benign" if i % 2 else "vanilla_harmful"} for i in range(4)]
    cfg = RunConfig(out_dir=str(out), model=ModelConfig(name=str(tiny_model_dir(out/"tiny"))),
                    train=TrainConfig(loss_type="sft+kl", lora_r=4, lora_alpha=8, max_steps=4, gradient_accumulation_steps=1, save_steps=2,
                                      learning_rate=1e-3, gradient_checkpointing=False))
    T.run_sft(cfg, data=recs)
""")

def _run(tmp_path, kill_at):
    return subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(kill_at)], capture_output=True, text=True, timeout=300)

def test_killed_run_resumes(tmp_path):
    p = _run(tmp_path, 2)
    assert p.returncode == -9, p.stderr[-2000:]
    from thinksafe.run import read_compute
    td = tmp_path/"train"/"sft+kl"
    ck = td/"checkpoints"
    assert [c.name for c in ck.glob("checkpoint-*")] == ["checkpoint-2"]
    assert not (td/"adapter").exists()
    p = _run(tmp_path, 0)
    assert p.returncode == 0, p.stderr[-2000:]
    comp = read_compute(td)["stages"]["training"]
    assert comp["steps"] == 4 and Path(comp["resumed_from"]).name == "checkpoint-2", comp
    first = read_compute(ck/"checkpoint-2")
    assert comp["tokens"] > first["tokens"] > 0 and comp["forward_tokens"] > first["forward_tokens"] > 0   # accounting continued
    steps = [c["step"] for c in json.loads((td/"curves.json").read_text())]
    assert steps == [1, 2, 3, 4], steps
    assert (td/"adapter"/"adapter_model.safetensors").exists()

DDP = textwrap.dedent("""
    import os, sys, json, torch
    from pathlib import Path
    torch.set_num_threads(1)
    from thinksafe.core import *
    from thinksafe.config import *
    from thinksafe.models import tiny_model_dir
    import thinksafe.train as T
    out = Path(sys.argv[1])
    recs = [{"prompt": f"question {i}?", "response": f"<think>\\nthink {i} " + "more " * i + f"</think>\\n\\nanswer {i}",
             "label": "vanilla_benign" if i % 2 else "vanilla_harmful"} for i in range(8)]
    cfg = RunConfig(out_dir=str(out), model=ModelConfig(name=str(tiny_model_dir(out/"tiny")), device="cpu"),
                    train=TrainConfig(loss_type="sft+kl", kl_reduction="sequence", lora_r=4, lora_alpha=8, max_steps=2, per_device_batch_size=2,
                                      effective_batch_size=8, save_steps=100, learning_rate=1e-2, gradient_checkpointing=False, lora_dropout=0.0))
    orig = T.ThinkSafeSFTTrainer.train
    def train(self, *a, **k):
        r = orig(self, *a, **k)
        torch.save({n: p.detach() for n, p in T.unwrap(self.model).named_parameters() if "lora_" in n}, out/f"lora-{os.environ['RANK']}.pt")
        json.dump({"wrapped": type(self.model_wrapped).__name__, "ga": self.args.gradient_accumulation_steps}, open(out/f"info-{os.environ['RANK']}.json", "w"))
        return r
    T.ThinkSafeSFTTrainer.train = train
    T.run_sft(cfg, data=recs)
""")

def test_kl_under_ddp(tmp_path):
    "Two CPU processes (gloo): the KL loss runs through the DDP-wrapped model, the accumulation halves, the adapters stay identical."
    from thinksafe.models import tiny_model_dir
    tiny_model_dir(tmp_path/"tiny")                  # made once here: both ranks read it
    script = tmp_path/"ddp.py"; script.write_text(DDP)
    torchrun = Path(sys.executable).parent/"torchrun"
    p = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", "29653", str(script), str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    info = [json.loads((tmp_path/f"info-{r}.json").read_text()) for r in (0, 1)]
    assert info[0] == info[1] == {"wrapped": "DistributedDataParallel", "ga": 2}, info     # 8 = 2 per device x 2 processes x 2
    a, b = (torch.load(tmp_path/f"lora-{r}.pt") for r in (0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)                                         # gradients were synchronised
    assert max(a[k].abs().max().item() for k in a if "lora_B" in k) > 0                    # and the adapter moved
    from thinksafe.run import read_compute
    comp = read_compute(tmp_path/"train"/"sft+kl")["stages"]["training"]
    assert comp["forward_tokens"] > 0 and comp["tokens"] > comp["forward_tokens"]

def test_cli_path_counts_synthesis(tmp_path):
    "`thinksafe train` (Run.train with no data) reads the kept records and merges the synthesis's compute: generation + guard + training."
    from thinksafe.config import RunConfig, ModelConfig, TrainConfig
    from thinksafe.core import compute_entry, write_jsonl
    from thinksafe.models import tiny_model_dir
    from thinksafe.run import Run, read_compute, write_compute
    import thinksafe.train
    cfg = RunConfig(out_dir=str(tmp_path), model=ModelConfig(name=str(tiny_model_dir(tmp_path/"tiny"))),
                    train=TrainConfig(lora_r=4, lora_alpha=8, max_steps=1, gradient_accumulation_steps=1, gradient_checkpointing=False))
    run = Run(cfg)
    write_jsonl(run.records_path(), RECS)
    write_compute(run.synth_dir(), {"generation": compute_entry("generate", 10, 100, 1.0), "guard": compute_entry("judge", 20, 100, 1.0)})
    trained = run.train()
    assert trained.adapter == run.adapter_dir("sft") and (trained.adapter/"adapter_config.json").exists()
    doc = read_compute(trained.dir)
    assert sorted(doc["stages"]) == ["generation", "guard", "training"]
    assert doc["total"]["flops"] == 2 * 10 * 100 + 2 * 20 * 100 + doc["stages"]["training"]["flops"]

def test_checkpointed_chunks_same_gradients(tiny, monkeypatch):
    "Long batches recompute the vocabulary projection in backward (activation checkpointing): same loss, same gradients."
    import thinksafe.train as T
    pm, tok = _perturbed(tiny), tiny[1]
    b = T.SFTCollator(tok.pad_token_id)([{**e, "use_kl": k} for e, k in zip(_examples(tok), (1, 0))])
    def run():
        pm.zero_grad()
        r = T.response_losses(pm, b["input_ids"], b["labels"], None, b["position_ids"], b["use_kl"], b["example"], kl_chunk=4)
        loss = T.reduce_losses(r, "sequence"); loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in pm.named_parameters() if p.grad is not None}
    plain = run()
    monkeypatch.setattr(T, "LOGITS_IN_MEMORY", 0)
    ck = run()
    assert abs(plain[0] - ck[0]) < 1e-6 and plain[1].keys() == ck[1].keys()
    assert all(torch.allclose(plain[1][k], ck[1][k], atol=1e-6) for k in plain[1])

def test_sequence_reduction_is_for_kl_only(tiny, tmp_path):
    "`kl_reduction: sequence` (the paper configs) leaves plain SFT at the token mean, as the reference's SFTTrainer; ThinkSafe+KL takes it."
    from thinksafe.config import TrainConfig
    from thinksafe.train import ThinkSafeSFTTrainer, sft_config, sft_dataset, response_losses, reduce_losses
    from thinksafe.models import format_example
    from thinksafe.train import tokenize_example
    pm, tok = _perturbed(tiny), tiny[1]
    recs = [RECS[0], {**RECS[1], "response": RECS[1]["response"] + " No. Never. I will not explain that to anyone, sorry." * 3}]
    exs = [tokenize_example(tok, *format_example(tok, r["prompt"], r["response"])) for r in recs]
    def loss(loss_type):
        tc = TrainConfig(loss_type=loss_type, kl_reduction="sequence", gradient_accumulation_steps=1)
        tr = ThinkSafeSFTTrainer(copy.deepcopy(pm), args=sft_config(tc, tmp_path/loss_type), processing_class=tok,
                                 train_dataset=sft_dataset(recs, tok, kl=loss_type == "sft+kl"))
        tr.current_gradient_accumulation_steps = 1
        b = tr.data_collator([{**e, "use_kl": 0} for e in exs])
        n = int(b["labels"][:, 1:].ne(-100).sum())
        with torch.no_grad():
            r = response_losses(tr.model, b["input_ids"], b["labels"], position_ids=b["position_ids"], example=b["example"])
            return tr.compute_loss(tr.model, dict(b), num_items_in_batch=n).item(), reduce_losses(r, "token").item(), reduce_losses(r, "sequence").item()
    got, token, seq = loss("sft")
    assert abs(token - seq) > 1e-3                   # the two reductions differ on this batch
    assert abs(got - token) < 1e-5, (got, token, seq)
    got, token, seq = loss("sft+kl")
    assert abs(got - seq) < 1e-5, (got, token, seq)


def test_retraining_with_other_data_is_not_resumed(tmp_path):
    "A finished run's checkpoints are not resumed for other training data: refused by name, or removed with fresh=True."
    from thinksafe.config import RunConfig, ModelConfig, TrainConfig
    from thinksafe.core import ConfigError, write_jsonl
    from thinksafe.models import tiny_model_dir
    from thinksafe.train import run_sft
    from thinksafe.run import read_compute
    # two steps: Adam's first step is lr x sign(gradient), the same for both data sets here
    cfg = RunConfig(out_dir=str(tmp_path), model=ModelConfig(name=str(tiny_model_dir(tmp_path/"tiny"))),
                    train=TrainConfig(lora_r=4, lora_alpha=8, max_steps=2, save_steps=1, gradient_accumulation_steps=1,
                                      gradient_checkpointing=False, learning_rate=1e-2))
    data = tmp_path/"data.jsonl"
    write_jsonl(data, RECS)
    adapter = run_sft(cfg, data=data)
    first = (adapter/"adapter_model.safetensors").read_bytes()
    other = [{**r, "response": r["response"].replace("bake", "boil").replace("hurt", "harm")} for r in RECS]
    write_jsonl(data, other)                                       # retrain in place on other records
    with pytest.raises(ConfigError, match="data"): run_sft(cfg, data=data)
    assert (adapter/"adapter_model.safetensors").read_bytes() == first
    run_sft(cfg, data=data, fresh=True)
    assert (adapter/"adapter_model.safetensors").read_bytes() != first
    doc = read_compute(tmp_path/"train"/"sft")
    assert doc["thinksafe_version"] and "git_commit" in doc


def test_report_to_is_checked(tmp_path):
    "train.report_to reaches the trainer's configuration; a logger whose package is missing is refused naming the key."
    import importlib.util
    from thinksafe.config import TrainConfig
    from thinksafe.core import ConfigError
    from thinksafe.train import sft_config, REPORT_PACKAGES
    from thinksafe.grpo import grpo_config
    assert sft_config(TrainConfig(), tmp_path).report_to in ("none", [])
    for name, pkg in REPORT_PACKAGES.items():
        tc = TrainConfig(report_to=name)
        if importlib.util.find_spec(pkg) is None:
            with pytest.raises(ConfigError, match=f"train.report_to={name}"): sft_config(tc, tmp_path)
            with pytest.raises(ConfigError, match=f"train.report_to={name}"): grpo_config(tc, tmp_path)
        else: assert sft_config(tc, tmp_path).report_to in (name, [name])
