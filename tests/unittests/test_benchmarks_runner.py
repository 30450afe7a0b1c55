"""benchmarks/run_all.py: every benchmark is listed, figures and commands are recorded."""

import ast
import importlib.util
import json
import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
BENCHMARKS = REPO_ROOT / "benchmarks"


def load_run_all():
    spec = importlib.util.spec_from_file_location("run_all", BENCHMARKS / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_all_lists_every_benchmark():
    scripts = {p.stem for p in BENCHMARKS.glob("*.py")} - {"run_all", "__init__"}
    assert set(load_run_all().BENCHMARKS) == scripts


def test_benchmark_docstrings_name_the_shared_guide_not_absolute_paths():
    for script in BENCHMARKS.glob("*.py"):
        text = script.read_text(encoding="utf-8")
        docstring = ast.get_docstring(ast.parse(text))
        assert "../shared/BENCHMARKING.md" in docstring, script.name
        assert "/work/" not in text, script.name


def test_run_all_records_figures_command_and_environment(tmp_path, monkeypatch):
    run_all = load_run_all()
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "fake.py").write_text(
        "import sys\nprint('a figure: 3 x faster')\nprint('speedup=3.0 diff=1e-7', sys.argv[1:])\n"
    )
    (tmp_path / "benchmarks" / "broken.py").write_text("raise SystemExit('no data')\n")
    monkeypatch.setattr(run_all, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(run_all, "RESULTS_MD", tmp_path / "benchmarks" / "RESULTS.md")
    monkeypatch.setattr(run_all, "RESULTS_JSON", tmp_path / "benchmarks" / "results.json")
    monkeypatch.setattr(
        run_all, "BENCHMARKS", {"fake": (["--full"], ["--short"]), "broken": ([], [])}
    )
    monkeypatch.setattr(sys, "argv", ["run_all.py"])
    run_all.main()

    text = (tmp_path / "benchmarks" / "RESULTS.md").read_text()
    assert "python benchmarks/fake.py --full" in text
    assert "| `speedup` | 3.0 |" in text and "| `diff` | 1e-7 |" in text
    assert "a figure: 3 x faster" in text
    assert "FAILED (1)" in text and "no data" in text
    import torch

    assert f"torch {torch.__version__}" in text and "load average" in text
    records = json.loads((tmp_path / "benchmarks" / "results.json").read_text())["benchmarks"]
    assert records["fake"]["figures"]["speedup"] == "3.0"

    # --only reruns one benchmark and keeps the other's last record.
    monkeypatch.setattr(sys, "argv", ["run_all.py", "--only", "fake", "--quick"])
    run_all.main()
    text = (tmp_path / "benchmarks" / "RESULTS.md").read_text()
    assert "python benchmarks/fake.py --short" in text and "no data" in text
