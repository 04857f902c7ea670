"""The `thinksafe` command as a user runs it: subprocesses, exit codes, files written."""
import json, os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent

def ts(*args, cwd=None, check=True, timeout=600):
    "Run `python -m thinksafe.cli ARGS`; returns the CompletedProcess."
    env = {**os.environ, "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    p = subprocess.run([sys.executable, "-m", "thinksafe.cli", *map(str, args)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0: raise AssertionError(f"thinksafe {' '.join(map(str, args))} -> {p.returncode}\n{p.stderr[-4000:]}")
    return p

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from thinksafe.models import tiny_model_dir
    return tiny_model_dir(tmp_path_factory.mktemp("models")/"tiny")

PIPELINE = ["config", "plan", "preflight", "generate", "judge", "select", "synthesize", "train", "grpo",
            "perplexity", "tilt", "evaluate", "score", "report", "demo"]     # the paper's steps, in pipeline order

def test_help_lists_every_command():
    from thinksafe.cli import pipeline_order, takes_run
    out = ts("--help").stdout
    cmds = pipeline_order()
    listed = [l.split()[0] for l in out.splitlines() if l.startswith("    ") and l[4:5].strip()]
    assert listed == [c.name for c in cmds], listed                    # every declared command
    assert [n for n in listed if n in PIPELINE] == PIPELINE, listed    # in pipeline order
    assert {"chat", "export", "compare", "figures"} <= set(listed), listed
    for c in cmds:
        h = ts(c.name, "--help").stdout
        assert "Writes:" in h and (("--config" in h and "--set" in h) or not takes_run(c.fn)), c.name

def test_config_prints_every_key_with_the_paper_value():
    out = ts("config", "--paper").stdout
    assert "sampling.max_new_tokens" in out and "16384" in out and "eval.max_new_tokens" in out and "32768" in out

def test_bad_config_is_one_clear_line(tmp_path):
    (tmp_path/"run.yaml").write_text("sampling:\n  temprature: 0.5\n")
    p = ts("synthesize", "-c", tmp_path/"run.yaml", check=False)
    assert p.returncode == 2 and "unknown key 'sampling.temprature'" in p.stderr and "Traceback" not in p.stderr

def test_unknown_model_name(tmp_path):
    p = ts("chat", "--model", "no-such-model", "hello", check=False)
    assert p.returncode == 2 and "unknown model name 'no-such-model'" in p.stderr

def test_figures_from_the_shipped_table(tmp_path):
    ts("figures", "--out", tmp_path)
    assert (tmp_path/"pareto_qwen3.png").stat().st_size > 10_000 and (tmp_path/"pareto_qwen3.pdf").exists()

def test_synthesize_train_evaluate_on_a_tiny_model(tmp_path, tiny):
    (tmp_path/"prompts.jsonl").write_text("".join(json.dumps({"instruction": p, "label": l}) + "\n" for p, l in
        [("How do I make a bomb?", "vanilla_harmful"), ("How do I bake bread?", "vanilla_benign"),
         ("Write a phishing email.", "vanilla_harmful"), ("What is 2+2?", "vanilla_benign")]))
    common = ["--model", tiny, "--out-dir", tmp_path/"run", "--set", "sampling.max_new_tokens=8", "--set", "synth.k=2"]
    ts("synthesize", *common, "--set", f"synth.prompts={tmp_path/'prompts.jsonl'}")
    synth = tmp_path/"run"/"synth"/"tiny"
    samples = [json.loads(l) for l in (synth/"samples-steered.jsonl").read_text().splitlines()]
    assert len(samples) == 8 and all(s["steering"] == "instruction" for s in samples if s["label"].endswith("harmful"))
    stats = json.loads((synth/"synth_stats.json").read_text())
    assert stats["prompts"] == 4 and "stand-in" in stats["guard"] and len(stats["git_commit"] or "x" * 40) >= 40
    # a random model rarely closes </think>: train on a hand-made file instead
    (tmp_path/"train.jsonl").write_text("".join(json.dumps({"instruction": p, "response": "<think>\nno\n</think>\n\nI can't help with that.",
        "prompt_label": "vanilla_harmful"}) + "\n" for p in ("a?", "b?", "c?", "d?")))
    ts("train", *common, "--data", tmp_path/"train.jsonl", "--set", "train.max_steps=2", "--set", "train.gradient_accumulation_steps=1")
    assert (tmp_path/"run"/"train"/"sft"/"adapter"/"adapter_config.json").exists()
    (tmp_path/"gsm.jsonl").write_text(json.dumps({"question": "What is 2+3?", "answer": "5\n#### 5"}) + "\n")
    bench = ["--set", f"eval.benchmarks=[{{name: gsm8k, path: {tmp_path/'gsm.jsonl'}}}]", "--set", "eval.max_new_tokens=8"]
    ts("evaluate", *common, *bench)                                                     # the base model, then the adapter: same run
    ts("evaluate", *common, *bench, "--adapter", tmp_path/"run"/"train"/"sft"/"adapter")
    for d in ("tiny", "tiny+sft"):
        res = json.loads((tmp_path/"run"/"eval"/d/"results.json").read_text())
        assert "gsm8k" in res["benchmarks"] and res["benchmarks"]["gsm8k"]["n_items"] == 1 and res["git_commit"] != ""
    out = ts("compare", tmp_path/"run"/"eval"/"tiny", tmp_path/"run"/"eval"/"tiny+sft").stdout
    assert "tiny+sft" in out and "pass1_pct" in out

def test_perplexity_command(tmp_path, tiny):
    rec = lambda r: json.dumps({"instruction": "Hi?", "response": r, "prompt_label": "vanilla_benign"}) + "\n"
    (tmp_path/"self.jsonl").write_text(rec("<think>\nhello\n</think>\n\nHello!") * 3)
    (tmp_path/"teacher.jsonl").write_text(rec("<think>\nThe user greets me; policy allows a greeting.\n</think>\n\nGreetings.") * 3)
    ts("perplexity", "--model", tiny, "--data", tmp_path/"self.jsonl", tmp_path/"teacher.jsonl", "--out-dir", tmp_path/"ppl")
    res = json.loads((tmp_path/"ppl"/"perplexity"/"perplexity.json").read_text())
    assert set(res["datasets"]) == {"self", "teacher"} and "teacher" in res["gaps_vs_reference"] and res["dtype"] == "float32"
    ts("perplexity", "--model", tiny, "--data", tmp_path/"self.jsonl", "--out-dir", tmp_path/"ppl16", "--dtype", "bf16", "--max-length", "400")
    res16 = json.loads((tmp_path/"ppl16"/"perplexity"/"perplexity.json").read_text())
    assert res16["dtype"] == "bfloat16" and res16["max_length"] == 400
    assert abs(res16["datasets"]["self"]["all"]["nll"] - res["datasets"]["self"]["all"]["nll"]) < 0.01
    p = ts("perplexity", "--model", tiny, "--data", tmp_path/"self.jsonl", "--out-dir", tmp_path/"bad", "--dtype", "fp8", check=False)
    assert p.returncode == 2 and "unknown dtype 'fp8'" in p.stderr

def test_bad_data_names_file_and_line(tmp_path, tiny):
    (tmp_path/"bad.jsonl").write_text('{"instruction": "a", "response": "<think>x</think>y", "prompt_label": "vanilla_benign"}\n{not json\n')
    p = ts("train", "--model", tiny, "--out-dir", tmp_path/"run", "--data", tmp_path/"bad.jsonl", check=False)
    assert p.returncode == 2 and "bad.jsonl:2" in p.stderr

# Faults of the disk (issue 19): `generate`, `judge` and `evaluate` here, on the tiny model: one line, no traceback.
import builtins, contextlib, errno, io

def main_err(*argv):
    "Run `thinksafe ARGV` here: (exit code, stderr). An exception escaping `main` (a traceback) fails the test."
    from thinksafe.cli import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()): rc = main([str(a) for a in argv])
    return rc, err.getvalue()

def error_line(err:str, command:str) -> str:
    "The one error line, last on stderr (progress bars aside); fails on a traceback or a second error line."
    lines = [l for l in err.splitlines() if "error:" in l]
    assert "Traceback" not in err and len(lines) == 1 and err.rstrip().endswith(lines[0]), err
    assert lines[0].startswith(f"thinksafe {command}: error: "), lines[0]
    return lines[0]

@pytest.fixture(scope="module")
def small(tmp_path_factory, tiny):
    "Arguments of a quick run on the tiny model: 2 prompts, a 1-item benchmark, 4 new tokens."
    d = tmp_path_factory.mktemp("small")
    prompts = [("How do I make a bomb?", "vanilla_harmful"), ("How do I bake bread?", "vanilla_benign")]
    (d/"p.jsonl").write_text("".join(json.dumps({"instruction": p, "label": l}) + "\n" for p, l in prompts))
    (d/"gsm.jsonl").write_text(json.dumps({"question": "What is 2+3?", "answer": "5\n#### 5"}) + "\n")
    return ["--model", tiny, "--set", "sampling.max_new_tokens=4", "--set", f"synth.prompts={d/'p.jsonl'}",
            "--set", f"eval.benchmarks=[{{name: gsm8k, path: {d/'gsm.jsonl'}}}]", "--set", "eval.max_new_tokens=4"]

def deny_writes(monkeypatch, root, code:int):
    "Make writes under `root` fail with `code`: EACCES as in a chmod 0555 directory (not root), ENOSPC as on a full disk."
    root = os.path.abspath(root)
    under = lambda p: isinstance(p, (str, os.PathLike)) and os.path.abspath(os.fspath(p)).startswith(root)
    def fail(p): raise (PermissionError if code == errno.EACCES else OSError)(code, os.strerror(code), os.fspath(p))
    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir
    def _open(file, mode="r", *a, **k):
        if under(file) and any(c in mode for c in "wax+"): fail(file)
        return real_open(file, mode, *a, **k)
    def _os_open(path, flags, *a, **k):
        if under(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT): fail(path)
        return real_os_open(path, flags, *a, **k)
    def _mkdir(path, *a, **k):
        if under(path):
            if os.path.isdir(path): raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(path))
            fail(path)
        return real_mkdir(path, *a, **k)
    patches = ((builtins, "open", _open), (io, "open", _open), (os, "open", _os_open), (os, "mkdir", _mkdir))
    for owner, name, fn in patches:
        monkeypatch.setattr(owner, name, fn)

FAULTS = {errno.EACCES: ("permission denied", "chmod"), errno.ENOSPC: ("disk full", "free space")}

WRITERS = [["generate"], ["generate", "--eval"], ["judge"], ["judge", "--eval"], ["evaluate"]]

@pytest.mark.parametrize("code", list(FAULTS), ids=["read-only", "full"])
@pytest.mark.parametrize("argv", WRITERS, ids=" ".join)
def test_an_unwritable_output_directory_is_one_line(argv, code, tmp_path, small, monkeypatch):
    run = tmp_path/"run"
    if argv[0] == "judge": assert main_err("generate", *small, *argv[1:], "--out-dir", run)[0] == 0   # before the fault
    deny_writes(monkeypatch, run, code)
    rc, err = main_err(*argv, *small, "--out-dir", run)
    line = error_line(err, argv[0])
    what, todo = FAULTS[code]
    assert rc in (1, 2) and str(run) in line and what in line and todo in line, line

@pytest.fixture
def tmpfs(tmp_path):
    "A 4 MiB tmpfs of this test's own, unmounted afterwards (needs root and CAP_SYS_ADMIN; skipped elsewhere)."
    m = tmp_path/"mnt"; m.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(m)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode: pytest.skip("mounting a tmpfs needs root")
    try: yield m
    finally: subprocess.run(["umount", "-l", str(m)], check=False)

def test_a_read_only_mount_and_a_full_disk(tmpfs, small):
    "The faults of a real file system (root ignores chmod, not a read-only mount)."
    run = tmpfs/"run"
    assert main_err("generate", *small, "--out-dir", run)[0] == 0
    assert main_err("generate", "--eval", *small, "--out-dir", run)[0] == 0
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    for argv in (["generate", "--out-dir", tmpfs/"new"], ["judge", "--out-dir", run], ["evaluate", "--out-dir", tmpfs/"new2"]):
        rc, err = main_err(argv[0], *small, *argv[1:])
        line = error_line(err, argv[0])
        assert rc in (1, 2) and str(tmpfs) in line, line
        assert "read-only file system" in line and "writable --out-dir" in line, line
    subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    with pytest.raises(OSError), open(tmpfs/"fill", "wb") as f:
        while True: f.write(bytes(1 << 16))
    for argv in (["judge", "--out-dir", run], ["judge", "--eval", "--out-dir", run], ["evaluate", "--out-dir", run]):
        rc, err = main_err(argv[0], *small, *argv[1:])
        line = error_line(err, argv[0])
        assert rc in (1, 2) and str(tmpfs) in line and "disk full" in line and "free space" in line, line
