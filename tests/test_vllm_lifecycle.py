"""The real vLLM engine's lifecycle: `VLLMGenerator.close` (and `generate.free`) stops the engine-core process and its worker,
their memory comes back to the system, and a torch.distributed process group the caller created stays initialized (the old
`release_engine` destroyed it with vLLM's `destroy_distributed_environment`); an engine the generator was given is left alone."""
import time
import pytest
from conftest import require_vllm
from thinksafe.config import ModelConfig, SamplingConfig

def alive(pids) -> list[int]:
    "The pids among `pids` that still run (a zombie has exited)."
    import psutil
    def up(p):
        try: return psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess: return False
    return [p for p in pids if up(p)]

def rss_mb(pids) -> float:
    import psutil
    return sum(psutil.Process(p).memory_info().rss for p in alive(pids)) / 2**20

def test_close_stops_the_engine_and_keeps_the_callers_process_group(tmp_path):
    require_vllm()
    import psutil, torch.distributed as dist, torch
    from thinksafe.vllm_backend import VLLMGenerator, engine_pids
    from thinksafe.generate import free
    dist.init_process_group("gloo", init_method=f"file://{tmp_path/'pg'}", rank=0, world_size=1)   # the trainer's group
    try:
        avail0 = psutil.virtual_memory().available
        gen = VLLMGenerator(ModelConfig(backend="vllm", max_model_len=2048), SamplingConfig(max_new_tokens=8), progress=False)
        assert gen.generate(["What is 2+2?"])[0].new_tokens > 0
        pids = engine_pids(gen.llm)
        assert len(pids) >= 2 and alive(pids) == pids                        # the engine core and its worker
        borrowed = VLLMGenerator(ModelConfig(backend="vllm"), llm=gen.llm, progress=False)   # an engine it did not build ...
        assert borrowed.context == 2048                                      # (context read from the engine)
        borrowed.close()
        assert borrowed.llm is None and alive(pids) == pids and gen.generate(["Hi"])[0].new_tokens > 0   # ... is left to its owner
        rss, avail1 = rss_mb(pids), psutil.virtual_memory().available
        held = gen.llm                # a reference that outlives close() (a caller's variable, a traceback): the engine stops anyway
        free(gen)                                                             # close(): shutdown_engine
        t = time.time()
        while alive(pids) and time.time() - t < 10: time.sleep(0.2)
        assert alive(pids) == [] and gen.llm is None
        time.sleep(1)
        avail2 = psutil.virtual_memory().available
        print(f"engine processes {pids}: RSS {rss:.0f} MB; system available {avail0/2**20:.0f} MB before start, {avail1/2**20:.0f} MB "
              f"running, {avail2/2**20:.0f} MB after close (+{(avail2 - avail1)/2**20:.0f} MB)")
        assert (avail2 - avail1) / 2**20 > 0.5 * rss                          # the engine's memory is back (other processes share the machine)
        assert dist.is_initialized()                                          # the caller's group survives ...
        x = torch.ones(1); dist.all_reduce(x); assert x.item() == 1.0        # ... and still works
        gen.close(); del held                                                 # idempotent
    finally: dist.destroy_process_group()
