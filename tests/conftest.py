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
