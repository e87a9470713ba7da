import importlib
import subprocess
import sys

import lmcore


def test_every_public_name_resolves():
    for name in lmcore.__all__:
        assert getattr(lmcore, name) is not None, name
    assert lmcore.ModelConfig is importlib.import_module("lmcore.model").ModelConfig


def test_tokenizer_does_not_import_torch():
    code = "import sys, lmcore.tokenizer; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_every_module_is_in_the_lazy_table():
    from pathlib import Path

    folder = Path(lmcore.__file__).parent
    found = {p.stem for p in folder.glob("*.py") if not p.stem.startswith("_")} | {
        p.parent.name for p in folder.glob("*/__init__.py")}
    assert found == set(lmcore._MODULES)
    for name in found:
        assert getattr(lmcore, name) is importlib.import_module(f"lmcore.{name}")


def test_the_names_for_type_checkers_are_the_lazy_ones():
    """The ``if TYPE_CHECKING:`` imports (what editors read) name exactly the lazy table's modules and names."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(lmcore.__file__).read_text(encoding="utf-8"))
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", None) == "TYPE_CHECKING")
    modules = {a.name for n in block.body if isinstance(n, ast.ImportFrom) and n.module is None for a in n.names}
    names = {a.name: n.module for n in block.body if isinstance(n, ast.ImportFrom) and n.module for a in n.names}
    assert modules == set(lmcore._MODULES)
    assert names == lmcore._EXPORTS


def _tasks():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module("tasks"), root
    finally:
        sys.path.remove(str(root))


def test_the_book_installs_and_links_its_own_version():
    """Every place that names lmcore's version (first cells, launch buttons, README) names lmcore.__version__."""
    tasks, _ = _tasks()
    written = tasks.versions_written()
    assert len(written) >= 10  # lmcore, _config.yml, README and seven notebooks
    assert {path: found for path, found in written.items() if found != {lmcore.__version__}} == {}


def test_tasks_version_rewrites_every_place(tmp_path, monkeypatch):
    import json
    import shutil

    tasks, root = _tasks()
    for pattern, _ in tasks.VERSIONED:
        for path in root.glob(pattern):
            (tmp_path / path.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, tmp_path / path.relative_to(root))
    monkeypatch.setattr(tasks, "ROOT", tmp_path)
    tasks.set_version(["9.8.7"])
    assert set().union(*tasks.versions_written().values()) == {"9.8.7"}
    for nb in tmp_path.glob("notebooks/*.ipynb"):
        cell = json.loads(nb.read_text())["cells"][1]
        assert "lmcore 9.8.7 (this book's version)\n" in cell["outputs"][0]["text"]


def test_an_old_torch_is_refused_in_one_line_at_import():
    code = ("import importlib.metadata as m; real = m.version\n"
            "m.version = lambda name: '2.3.1' if name == 'torch' else real(name)\nimport lmcore")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1
    assert last == ("ImportError: lmcore needs torch>=2.6, the oldest release its tests pass on; this is torch 2.3.1: "
                    "pip install 'torch>=2.6'")
    ok = subprocess.run([sys.executable, "-c", code.replace("2.3.1", "2.6.0+cu124")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr


def test_the_torch_lower_bound_is_the_same_everywhere():
    """requirements.txt, pyproject.toml and the import-time check name the same lowest torch."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    need = ".".join(map(str, lmcore.MIN_TORCH))
    assert re.search(r"^torch>=([\d.]+)", (root / "requirements.txt").read_text(), re.M).group(1) == need
    assert f'"torch>={need}"' in (root / "pyproject.toml").read_text()
    assert f"torch>={need}" in (root / "README.md").read_text()


def test_the_readme_lists_the_teaching_core_with_its_current_line_counts():
    """README's teaching-core and fast-layer tables: every module exists and its line count is today's."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(lmcore/[\w/]+\.py)` \|.*\| (\d+) \|$", readme, flags=re.M)
    assert len(rows) >= 12, rows
    for path, lines in rows:
        assert len((root / path).read_text(encoding="utf-8").splitlines()) == int(lines), path
