"""Configuration values read by their declared type, and adapters checked, through the real entry point
(`thinksafe.cli.main`): every bad value is one line on stderr naming the key, the value and the type, exit code 2,
no traceback, and no model loaded."""
import json
from pathlib import Path
import pytest
from thinksafe.cli import main

@pytest.fixture
def no_model(monkeypatch):
    "Fail the test if any command loads a model (transformers or vLLM): errors must come before."
    import sys, thinksafe.models, thinksafe.generate
    def loaded(*a, **k): raise AssertionError("a model was loaded before the bad value was refused")
    for name, m in list(sys.modules.items()):       # the modules that hold the builders by name, thinksafe.generate's own
        if name.startswith("thinksafe."):
            for fn in ("load_model", "make_generator"):
                if hasattr(m, fn): monkeypatch.setattr(m, fn, loaded)

def cli(capsys, *argv):
    "Run `thinksafe ARGV` here: (exit code, stdout, stderr). An exception escaping `main` (a traceback) fails the test."
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err

def one_line(err:str) -> str:
    "The single line of `err` (fails if there are more, or a traceback)."
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]

def config_value(out:str, key:str) -> str:
    "The value column of `key` in `thinksafe config`'s table."
    row = next(l for l in out.splitlines() if l.split()[:1] == [key])
    return row.split()[1]

def test_numbers_in_any_spelling(tmp_path, capsys):
    (tmp_path/"run.yaml").write_text("train:\n  learning_rate: 2e-5\nsampling:\n  max_new_tokens: 1e3\n"
                                     "eval:\n  limit: None\nmodel:\n  enforce_eager: off\n")
    rc, out, err = cli(capsys, "config", "-c", tmp_path/"run.yaml")
    assert rc == 0, err
    assert (config_value(out, "train.learning_rate"), config_value(out, "sampling.max_new_tokens")) == ("2e-05", "1000")
    assert (config_value(out, "eval.limit"), config_value(out, "model.enforce_eager")) == ("None", "False")
    rc, out, err = cli(capsys, "config", "--set", "train.learning_rate=1e-5", "--set", "sampling.max_new_tokens=1e3",
                       "--set", "eval.limit=~")
    assert rc == 0 and config_value(out, "train.learning_rate") == "1e-05"
    assert (config_value(out, "sampling.max_new_tokens"), config_value(out, "eval.limit")) == ("1000", "None")
    from thinksafe.config import load_config
    cfg = load_config(tmp_path/"run.yaml", ["sampling.top_k=2e1", "synth.adaptive=yes", "model.revision=0123"])
    assert (cfg.train.learning_rate, cfg.sampling.max_new_tokens, cfg.sampling.top_k) == (2e-5, 1000, 20)
    assert cfg.synth.adaptive is True
    assert type(cfg.sampling.max_new_tokens) is int and cfg.eval.limit is None and cfg.model.revision == "0123"

BAD = [  # --set, what the line must say
    ("sampling.temperature=abc", "sampling.temperature must be a number (float), got 'abc'"),
    ("eval.limit=abc", "eval.limit must be a whole number (int) or null, got 'abc'"),
    ("sampling.batch_size=2.5", "sampling.batch_size must be a whole number (int), got 2.5"),
    ("sampling.top_k=2.5", "sampling.top_k must be a whole number (int), got 2.5"),
    ("sampling.max_new_tokens=1e3.5", "sampling.max_new_tokens must be a whole number (int), got '1e3.5'"),
    ("synth.adaptive=2", "synth.adaptive must be true or false (bool), got 2"),
    ("sampling.seed=true", "sampling.seed must be a whole number (int), got True"),
    ("train.learning_rate=fast", "train.learning_rate must be a number (float), got 'fast'"),
    ("eval.benchmarks=gsm8k", "eval.benchmarks must be a list such as [a, b], got 'gsm8k'"),
    ("eval.benchmarks=[gsm8k", "--set eval.benchmarks=[gsm8k: invalid YAML"),
]

@pytest.mark.parametrize("override,says", BAD, ids=[b[0] for b in BAD])
def test_a_bad_value_is_one_line_before_any_model_loads(override, says, tmp_path, capsys, no_model):
    rc, out, err = cli(capsys, "generate", "--out-dir", tmp_path/"run", "--set", override)
    assert rc == 2 and one_line(err).startswith("thinksafe generate: error: ") and says in err, err
    assert not (tmp_path/"run").exists()                                       # nothing was started

IN_FILE = [("sampling:\n  batch_size: 2.5\n", "run.yaml: sampling.batch_size must be a whole number (int), got 2.5"),
           ("sampling:\n  temperature: abc\n", "run.yaml: sampling.temperature must be a number (float), got 'abc'"),
           ("eval:\n  limit: [3\n", "run.yaml:3: invalid YAML")]

@pytest.mark.parametrize("text,says", IN_FILE)
def test_a_bad_value_in_the_file_is_one_line(text, says, tmp_path, capsys, no_model):
    (tmp_path/"run.yaml").write_text(text)
    rc, out, err = cli(capsys, "evaluate", "-c", tmp_path/"run.yaml", "--out-dir", tmp_path/"run")
    assert rc == 2 and says in one_line(err), err

def adapter(d:Path, config='{"r": 8, "base_model_name_or_path": "tiny"}', weights=b"whole") -> Path:
    "A directory shaped like a PEFT adapter (no torch needed): its config and a one-tensor safetensors file."
    d.mkdir(parents=True)
    if config is not None: (d/"adapter_config.json").write_text(config)
    if weights is not None:
        header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
        whole = len(header).to_bytes(8, "little") + header + bytes(8)
        (d/"adapter_model.safetensors").write_bytes(whole if weights == b"whole" else weights)
    return d

BROKEN = {  # name: (adapter() arguments, the file the line names, what it says)
    "empty config": (dict(config=""), "adapter_config.json", "is empty"),
    "cut-off config": (dict(config='{"r": 8, "base_model_na'), "adapter_config.json", "is not valid JSON (cut off?)"),
    "no config": (dict(config=None), "adapter_config.json", "missing: not a PEFT adapter directory"),
    "no r": (dict(config='{"base_model_name_or_path": "tiny"}'), "adapter_config.json", "has no 'r'"),
    "no base model": (dict(config='{"r": 8}'), "adapter_config.json", "has no 'base_model_name_or_path'"),
    "no weights": (dict(weights=None), "bad", "has no adapter weights (adapter_model.safetensors or adapter_model.bin"),
    "empty weights": (dict(weights=b""), "adapter_model.safetensors", "is empty"),
    "cut-off weights": (dict(weights=(64).to_bytes(8, "little") + b'{"w"'), "adapter_model.safetensors", "is cut off"),
}

@pytest.mark.parametrize("command", ["generate", "evaluate"])
@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_adapter_is_one_line_naming_the_file_before_any_model_loads(case, command, tmp_path, capsys, no_model):
    kw, file, says = BROKEN[case]
    d = adapter(tmp_path/"bad", **kw)
    rc, out, err = cli(capsys, command, "--adapter", d, "--out-dir", tmp_path/"run")
    line = one_line(err)
    assert rc == 2 and line.startswith(f"thinksafe {command}: error: ") and says in line, line
    assert (f"{d}: " if file == "bad" else f"{d/file}: ") in line, line
    rc, out, err = cli(capsys, command, "--set", f"model.adapter={d}", "--out-dir", tmp_path/"run")   # the key too
    assert rc == 2 and says in one_line(err)

def test_a_missing_adapter_directory(tmp_path, capsys, no_model):
    rc, out, err = cli(capsys, "chat", "--adapter", tmp_path/"nope", "hello")
    assert rc == 2 and f"{tmp_path/'nope'}: no such adapter directory" in one_line(err)

def test_a_whole_adapter_passes_the_check(tmp_path):
    from thinksafe.config import check_adapter
    assert check_adapter(adapter(tmp_path/"ok"))["r"] == 8
