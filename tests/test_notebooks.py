"""Run every notebook in nbs/ as one pytest test, through nbdev's notebook runner.

Cells flagged `#| shared` read the benchmark copies in ../shared beside the checkout. They run where that
folder exists; elsewhere each notebook's `shared cells` test skips, naming the files. In CI
(THINKSAFE_REQUIRE_SHARED=1) a missing file fails instead of skipping."""
from pathlib import Path
import json, os, re, pytest
from nbdev.test import test_nb as run_notebook  # renamed so pytest does not collect it
from thinksafe.core import shared_dir

NBS = sorted((Path(__file__).resolve().parent.parent / "nbs").glob("[0-9][0-9]_*.ipynb"))
SKIP = ["notest", "slow", "gpu", "shared"]
SHARED = shared_dir()
REQUIRE = os.environ.get("THINKSAFE_REQUIRE_SHARED") == "1"

def shared_files(nb:Path) -> list[str]:
    "Files under shared/ that the notebook's `#| shared` cells name (through `needs_shared`)."
    cells = ["".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    flagged = [c for c in cells if re.search(r"^#\|\s*shared\b", c, re.M)]
    files = sorted({f for c in flagged for f in re.findall(r"needs_shared\(\s*[\"']([^\"']+)[\"']", c)})
    return files or (["data"] if flagged else [])

@pytest.mark.parametrize("nb", NBS, ids=[p.stem for p in NBS])
def test_notebook(nb):
    force = [f for f in os.environ.get("THINKSAFE_NB_FLAGS", "").split(",") if f]
    if SHARED is not None and all((SHARED/f).exists() for f in shared_files(nb)): force.append("shared")
    ok, secs = run_notebook(nb, skip_flags=SKIP, force_flags=force, showerr=True)
    assert ok, f"{nb.name} failed (traceback above)"

NBS_SHARED = [nb for nb in NBS if shared_files(nb)]

@pytest.mark.parametrize("nb", NBS_SHARED, ids=[p.stem for p in NBS_SHARED])
def test_notebook_shared_cells(nb):
    "The `#| shared` cells ran inside test_notebook when their files exist; otherwise skip (or fail in CI) naming them."
    missing = [f for f in shared_files(nb) if SHARED is None or not (SHARED/f).exists()]
    if missing:
        msg = f"{nb.name}: its `#| shared` cells need {', '.join('shared/' + f for f in missing)} beside the checkout"
        if REQUIRE: pytest.fail(msg + " (THINKSAFE_REQUIRE_SHARED=1: CI must have them)")
        pytest.skip(msg)
