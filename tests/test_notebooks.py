"""Run every notebook in nbs/ as one pytest test, through nbdev's notebook runner."""
from pathlib import Path
import os, pytest
from nbdev.test import test_nb as run_notebook  # renamed so pytest does not collect it

NBS = sorted((Path(__file__).resolve().parent.parent / "nbs").glob("[0-9][0-9]_*.ipynb"))
SKIP = ["notest", "slow", "gpu"]

@pytest.mark.parametrize("nb", NBS, ids=[p.stem for p in NBS])
def test_notebook(nb):
    force = [f for f in os.environ.get("THINKSAFE_NB_FLAGS", "").split(",") if f]
    ok, secs = run_notebook(nb, skip_flags=SKIP, force_flags=force, showerr=True)
    assert ok, f"{nb.name} failed (traceback above)"
