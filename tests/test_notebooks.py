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

def package_state() -> dict:
    "Every module's names and every class's attributes of the package, and its command registry."
    import importlib, inspect, pkgutil, sys, thinksafe
    for m in pkgutil.iter_modules(thinksafe.__path__):
        if not m.name.startswith("_"): importlib.import_module(f"thinksafe.{m.name}")
    mods = {n: m for n, m in sys.modules.items() if n.startswith("thinksafe.") and m is not None}
    classes = [o for n, m in mods.items() for o in vars(m).values() if inspect.isclass(o) and o.__module__ == n]
    return {"modules": {m: dict(vars(m)) for m in mods.values()}, "classes": {c: dict(vars(c)) for c in classes},
            "commands": dict(sys.modules["thinksafe.run"].COMMANDS)}

def restore(state:dict):
    """Put the package back as `package_state` saw it: a notebook runs in this process and `@patch`es the package's
    classes (`Run.train` becomes the notebook's function, with the notebook's globals and stubs) and declares its
    commands again; the tests after it must meet the package, not the notebook."""
    for cls, saved in state["classes"].items():
        for k in [k for k in vars(cls) if k not in saved]:
            try: delattr(cls, k)
            except (AttributeError, TypeError): pass
        for k, v in saved.items():
            if vars(cls).get(k) is not v:
                try: setattr(cls, k, v)
                except (AttributeError, TypeError): pass
    for mod, saved in state["modules"].items():
        for k, v in saved.items():
            if vars(mod).get(k) is not v: setattr(mod, k, v)
    import thinksafe.run
    thinksafe.run.COMMANDS.clear()
    thinksafe.run.COMMANDS.update(state["commands"])

@pytest.fixture(scope="module")
def package():
    return package_state()

@pytest.mark.parametrize("nb", NBS, ids=[p.stem for p in NBS])
def test_notebook(nb, package):
    force = [f for f in os.environ.get("THINKSAFE_NB_FLAGS", "").split(",") if f]
    if SHARED is not None and all((SHARED/f).exists() for f in shared_files(nb)): force.append("shared")
    try: ok, secs = run_notebook(nb, skip_flags=SKIP, force_flags=force, showerr=True)
    finally: restore(package)
    assert ok, f"{nb.name} failed (traceback above)"

def test_notebooks_leave_the_package_as_it_was(package):
    "After the notebooks ran here, `Run`'s stages and the commands are the package's own functions again."
    import thinksafe.run, thinksafe.train
    assert thinksafe.run.Run.train.__module__ == "thinksafe.train"
    assert thinksafe.run.COMMANDS["train"].fn.__module__ == "thinksafe.train"

NBS_SHARED = [nb for nb in NBS if shared_files(nb)]

@pytest.mark.parametrize("nb", NBS_SHARED, ids=[p.stem for p in NBS_SHARED])
def test_notebook_shared_cells(nb):
    "The `#| shared` cells ran inside test_notebook when their files exist; otherwise skip (or fail in CI) naming them."
    missing = [f for f in shared_files(nb) if SHARED is None or not (SHARED/f).exists()]
    if missing:
        msg = f"{nb.name}: its `#| shared` cells need {', '.join('shared/' + f for f in missing)} beside the checkout"
        if REQUIRE: pytest.fail(msg + " (THINKSAFE_REQUIRE_SHARED=1: CI must have them)")
        pytest.skip(msg)
