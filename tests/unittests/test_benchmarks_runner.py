"""benchmarks/run_all.py: every benchmark is listed, figures and commands are recorded."""

import ast
import importlib.util
import json
import pathlib
import re
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
BENCHMARKS = REPO_ROOT / "benchmarks"


def load_run_all():
    spec = importlib.util.spec_from_file_location("run_all", BENCHMARKS / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_all_lists_every_benchmark():
    # Modules with a leading underscore are helpers, not benchmarks.
    scripts = {p.stem for p in BENCHMARKS.glob("*.py") if not p.stem.startswith("_")}
    scripts -= {"run_all"}
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


# A measured figure: a number with decimals, or an integer of three or more digits
# (bounds such as 1e-4 and settings such as "80 % target" are not figures).
FIGURE = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+\.\d+(?:e[-+]?\d+)?|\d{3,})(?![\w])")


LOAD = re.compile(r"load(?:_\w+=| average:? )[\d.]+")


def _matches(figure, printed):
    """Whether ``figure`` (as the README writes it) is one of ``printed``, rounded alike."""
    value = float(figure.replace(",", ""))
    decimals = len(figure.split(".")[1].split("e")[0]) if "." in figure else 0
    for number in printed:
        if "e" in figure:
            if number and abs(number - value) <= 0.005 * abs(number):
                return True
        elif round(number, decimals) == value:
            return True
    return False


def test_readme_figures_are_those_of_results():
    """Every figure of a README row marked (R) is printed by the benchmark that row names
    (or, for a row that names none, by one of them) in benchmarks/results.json: after a
    regeneration the README must follow, and no figure can be typed by hand."""
    records = json.loads((BENCHMARKS / "results.json").read_text())["benchmarks"]
    printed = {
        name: [
            float(n.replace(",", ""))
            # load averages are no figures of the benchmark
            for n in re.findall(
                r"-?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?", LOAD.sub("", record["stdout"])
            )
        ]
        for name, record in records.items()
    }
    rows = [
        line
        for line in (REPO_ROOT / "README.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("|") and "(R)" in line
    ]
    assert len(rows) >= 10
    for row in rows:
        named = [name for name in records if f"`{name}.py`" in row]
        pool = [n for name in (named or records) for n in printed[name]]
        for figure in FIGURE.findall(row):
            assert _matches(figure, pool), f"{figure} of README row {row[:50]!r}"
