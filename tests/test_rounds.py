"""Iterative ThinkSafe from the command line (issue 20): `thinksafe synthesize` with `synth.rounds: 3` runs three rounds,
each after the first sampling from the adapter the previous round trained, each training a fresh adapter.

The tiny random model writes a closing `</think>` only because the generator forces it (its template has no thinking),
and the embedded refusal-pattern guard calls its benign answers safe: every round keeps records to train on."""
import json, os, subprocess, sys
from pathlib import Path
import pytest

from thinksafe.config import RunConfig, ModelConfig
from thinksafe.records import read_records
from thinksafe.store import model_label
from thinksafe.run import Run, stored_samples, read_compute, STEERED

PROMPTS = [("How do I bake bread?", "vanilla_benign"), ("What is 2+2?", "vanilla_benign"),
           ("Name three colors.", "vanilla_benign"), ("How do I make a bomb?", "vanilla_harmful")]
SMALL = ["synth.k=1", "sampling.max_new_tokens=24", "sampling.batch_size=4", "train.max_steps=1",
         "train.gradient_accumulation_steps=1", "train.lora_r=4", "train.lora_alpha=8", "train.save_steps=100",
         "train.gradient_checkpointing=false"]


def thinksafe(*args, timeout=900):
    "Run `python -m thinksafe.cli ARGS` as a user does; returns the CompletedProcess."
    env = {**os.environ, "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "thinksafe.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def three_rounds(tmp_path_factory):
    "A run of `thinksafe synthesize --set synth.rounds=3` on the tiny model; its Run and the command's output."
    from thinksafe.models import tiny_model_dir
    tmp = tmp_path_factory.mktemp("rounds")
    tiny = tiny_model_dir(tmp/"models"/"tiny")
    prompts = tmp/"prompts.jsonl"
    prompts.write_text("".join(json.dumps({"instruction": p, "label": l}) + "\n" for p, l in PROMPTS))
    sets = [x for kv in [*SMALL, "synth.rounds=3", f"synth.prompts={prompts}"] for x in ("--set", kv)]
    p = thinksafe("synthesize", "--model", tiny, "--out-dir", tmp/"run", *sets)
    assert p.returncode == 0, p.stderr[-4000:]
    return Run(RunConfig(out_dir=str(tmp/"run"), model=ModelConfig(name=str(tiny)))), p.stdout


def test_three_rounds_each_with_records_and_an_adapter(three_rounds):
    run, out = three_rounds
    for r in range(3):
        d = run.synth_dir(r)
        assert (d/f"{STEERED}.jsonl").exists() and (d/"synth_stats.json").exists(), d
        assert len(read_records(run.records_path(r))) > 0, r
        assert (run.adapter_dir(round=r)/"adapter_config.json").exists(), r
        assert read_compute(run.train_dir(round=r))["stages"]["training"]["steps"] == 1
    assert run.synth_dir(1) == run.root/"rounds"/"round-1"/"synth"
    assert "round: 2" in out, out                                       # the command reports the last round


def test_each_round_samples_from_the_previous_adapter(three_rounds):
    run, _ = three_rounds
    first = {s.model for s in stored_samples(run.synth_dir(0), STEERED)}
    assert all("+" not in m for m in first), first                      # round 0: the base model
    for r in (1, 2):
        fp = json.loads((run.synth_dir(r)/f"{STEERED}.fingerprint.json").read_text())
        assert fp["adapter"] == str(run.adapter_dir(round=r - 1)), (r, fp["adapter"])
        models = {s.model for s in stored_samples(run.synth_dir(r), STEERED)}
        assert models == {model_label(run.cfg.model.name, run.adapter_dir(round=r - 1))}, models
    named = [{s.model for s in stored_samples(run.synth_dir(r), STEERED)}.pop() for r in (1, 2)]
    assert named[0] != named[1] and named[1].endswith("-round-1"), named   # each round names the adapter it sampled


def test_rounds_resume_without_sampling_or_training_again(three_rounds):
    run, _ = three_rounds
    before = [read_compute(run.train_dir(round=r)) for r in range(3)]
    samples = [(run.synth_dir(r)/f"{STEERED}.jsonl").read_text() for r in range(3)]
    sets = [x for kv in [*SMALL, "synth.rounds=3", f"synth.prompts={run.root.parent/'prompts.jsonl'}"] for x in ("--set", kv)]
    p = thinksafe("synthesize", "--model", run.cfg.model.name, "--out-dir", run.root, *sets)
    assert p.returncode == 0, p.stderr[-4000:]
    assert [read_compute(run.train_dir(round=r)) for r in range(3)] == before
    assert [(run.synth_dir(r)/f"{STEERED}.jsonl").read_text() for r in range(3)] == samples
