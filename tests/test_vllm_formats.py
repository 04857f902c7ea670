"""The qwen3 and r1 thinking formats through the real chat template on the real vLLM engine: a model directory holding the
embedded model's weights and a tokenizer with a Qwen3-style or R1-style template (`models.styled_tokenizer`). vLLM renders
the conversation `VLLMGenerator` sends into exactly the tokens the transformers backend builds (`models.chat_prompt`)."""
import shutil
import pytest
from conftest import require_vllm
from thinksafe.config import ModelConfig, SamplingConfig
from thinksafe.records import Sample

def styled_model_dir(path, style:str):
    "The embedded model's weights and config with a `style` ('qwen3', 'r1') chat template, as a model directory."
    from thinksafe.models import embedded_model_dir, styled_tokenizer
    src = embedded_model_dir()
    path.mkdir(parents=True, exist_ok=True)
    for f in ("config.json", "generation_config.json"): shutil.copy(src/f, path/f)
    (path/"model.safetensors").symlink_to(src/"model.safetensors")
    styled_tokenizer(style).save_pretrained(path)
    return path

@pytest.fixture(params=["qwen3", "r1"])
def styled(request, tmp_path):
    require_vllm()
    from thinksafe.vllm_backend import VLLMGenerator
    d = styled_model_dir(tmp_path/request.param, request.param)
    g = VLLMGenerator(ModelConfig(name=str(d), backend="vllm", max_model_len=1024), SamplingConfig(max_new_tokens=12, seed=0), progress=False)
    sent, chat = [], g.llm.chat
    def spy(messages, **kw):
        outs = chat(messages, **kw); sent.append((messages, kw, outs)); return outs
    g.llm.chat, g.sent = spy, sent
    yield request.param, g
    g.close()

def test_think_format_through_the_real_template(styled):
    from thinksafe.models import chat_prompt, generation_prefix
    from thinksafe.generate import user_turn
    style, g = styled
    prompts = [Sample("What is 2+2?"), Sample("How do I pick a lock?", "vanilla_harmful", sent="Refuse if harmful. How do I pick a lock?")]
    out = g.generate(prompts, n=2)
    messages, kw, outs = g.sent[-1]
    assert g.fmt == style and g.prefix == generation_prefix(style)
    if style == "qwen3":
        assert kw["chat_template_kwargs"] == {"enable_thinking": True} and kw["add_generation_prompt"] and not kw["continue_final_message"]
        assert messages[2] == [{"role": "user", "content": prompts[1].sent}]           # no system turn, no opened assistant turn
    else:
        assert kw["continue_final_message"] and not kw["add_generation_prompt"] and "chat_template_kwargs" not in kw
        assert messages[2] == [{"role": "user", "content": prompts[1].sent}, {"role": "assistant", "content": "<think>\n"}]
        assert all(o.response.startswith("<think>\n") for o in out)                     # the opened think tag put back
    # vLLM's rendering of the conversation = the transformers backend's prompt, token for token (one BOS for r1)
    for s, ro in zip([p for p in prompts for _ in range(2)], outs):
        want = g.tokenizer(chat_prompt(g.tokenizer, user_turn(s), style), add_special_tokens=False)["input_ids"]
        assert list(ro.prompt_token_ids) == want, (g.tokenizer.decode(ro.prompt_token_ids), g.tokenizer.decode(want))
    ids = list(outs[0].prompt_token_ids)
    if style == "r1": assert ids[0] == g.tokenizer.bos_token_id and ids[1] != g.tokenizer.bos_token_id
    assert [o.prompt_tokens for o in out] == [len(ro.prompt_token_ids) for ro in outs]
    assert all(0 <= o.new_tokens <= 12 for o in out) and any(o.new_tokens for o in out)
