"""benchmarks/run_all.py: every benchmark is listed, figures and commands are recorded."""

import ast
import importlib.util
import json
import pathlib
import re
import sys
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

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


# A README row that quotes a benchmark ends with a marker naming the benchmark and, in
# order, the key of the benchmark's last line (``name=value`` pairs) behind each figure
# of the row: ``(R frontend: ours_ms, speedup)``. The row's first cell names what is
# measured and its settings (clip length, batch, threads, bounds); every number in the
# other cells is a figure and must be linked to a key.
MARKER = re.compile(r"\(R (\w+): ([\w, ]+)\)")
# Every number of a cell: integers of any size, decimals, thousands separators, powers
# of ten, ratios written as 8.91x. A digit glued to a letter (fp32, w2v-BERT) is a name.
NUMBER = re.compile(r"(?<![\w.])\d[\d,.]*(?:e[-+]?\d+)?")
# An inline `name=value name=value` quotation of a last line, in the READMEs' prose.
PAIRS_SPAN = re.compile(r"`(\w+=[-+]?\d[^\s`]*(?:\s+\w+=[-+]?\d[^\s`]*)*)`")
READMES = [REPO_ROOT / "README.md", REPO_ROOT / "recipes" / "VoxCeleb" / "README.md"]


def last_line_figures():
    """benchmark -> the ``name=value`` pairs of the last line of its recorded output."""
    records = json.loads((BENCHMARKS / "results.json").read_text())["benchmarks"]
    pairs = load_run_all().last_line_pairs
    return {name: pairs(record["stdout"]) for name, record in records.items()}


def _as_printed(figure, value):
    """Whether ``value`` (a key's value) rounds to ``figure`` at the README's precision."""
    figure = Decimal(figure.replace(",", ""))
    try:
        value = Decimal(value)
    except InvalidOperation:
        return False
    quantum = Decimal((0, (1,), figure.as_tuple().exponent))
    return value.quantize(quantum, rounding=ROUND_HALF_UP) == figure


def marked_row_errors(text, figures):
    """What is wrong with the marked table rows of ``text``: a figure that is not its
    key's value, a number linked to no key, a key linked to no number, an unknown key."""
    errors, rows = [], 0
    for row in text.splitlines():
        if not row.startswith("|") or "(R" not in row:
            continue
        markers = MARKER.findall(row)
        if len(markers) != 1:
            errors.append(f"row without one (R benchmark: keys) marker: {row[:70]!r}")
            continue
        rows += 1
        name, keys = markers[0]
        keys = [key for key in re.split(r"[,\s]+", keys) if key]
        cells = MARKER.sub("", row).strip().strip("|").split("|")[1:]
        numbers = [n.rstrip(".,") for cell in cells for n in NUMBER.findall(cell)]
        if name not in figures:
            errors.append(f"{name} has no record in results.json: {row[:70]!r}")
            continue
        if len(numbers) != len(keys):
            errors.append(
                f"{len(numbers)} figures {numbers} but {len(keys)} keys {keys}: {row[:70]!r}"
            )
            continue
        for number, key in zip(numbers, keys):
            if key not in figures[name]:
                errors.append(f"{name} prints no {key}: {row[:70]!r}")
            elif not _as_printed(number, figures[name][key]):
                errors.append(f"{number} is not {name}'s {key}={figures[name][key]}")
    return errors, rows


def quoted_pairs_errors(text, figures):
    """Inline `name=value` quotations in prose: each must be one benchmark's last line."""
    errors = []
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    for span in PAIRS_SPAN.findall(text):
        pairs = dict(pair.split("=", 1) for pair in span.split())
        holders = [name for name, found in figures.items() if set(pairs) <= set(found)]
        if not any(
            all(_as_printed(v, figures[name][k]) for k, v in pairs.items()) for name in holders
        ):
            errors.append(f"`{span}` is no benchmark's last line (holders: {holders})")
    return errors


def test_readme_figures_are_those_of_results():
    """Every figure of a README row marked (R ...) is the value of the key the marker
    links it to, in the last line of that benchmark's output in benchmarks/results.json,
    rounded as the README prints it; no number of a marked row is left unlinked. After a
    regeneration the README must follow, and no figure can be typed by hand."""
    figures = last_line_figures()
    errors, rows = marked_row_errors((REPO_ROOT / "README.md").read_text("utf-8"), figures)
    assert not errors, "\n".join(errors)
    # the correctness table, the speed table and the deployment table
    assert rows >= 24
    for readme in READMES:
        errors = quoted_pairs_errors(readme.read_text("utf-8"), figures)
        assert not errors, f"{readme}: " + "\n".join(errors)


def test_readme_check_catches_a_wrong_or_unlinked_figure():
    figures = last_line_figures()
    readme = (REPO_ROOT / "README.md").read_text("utf-8")
    speedup = figures["frontend"]["speedup"]
    wrong = str(Decimal(speedup) + 1)  # 8.91x becomes 9.91x
    assert f"{speedup}x" in readme
    errors, _ = marked_row_errors(readme.replace(f"{speedup}x", f"{wrong}x", 1), figures)
    assert errors and "speedup" in errors[0]
    # a figure added to a marked row without a key
    row = next(
        line for line in readme.splitlines() if line.startswith("|") and "(R frontend:" in line
    )
    unlinked = row.replace("(R frontend:", "2.2x faster at 60 s (R frontend:")
    errors, _ = marked_row_errors(readme.replace(row, unlinked), figures)
    assert errors and "keys" in errors[0]
    # a figure that rounds elsewhere, and a quotation of a key no benchmark prints
    assert not _as_printed("8.19", "8.91") and _as_printed("8.9", "8.91")
    assert _as_printed("1,687", "1687") and _as_printed("6.44e-6", "6.44e-06")
    assert _as_printed("4.09", "4.085") and not _as_printed("84", "84.6")
    assert quoted_pairs_errors("`speedup=8.19`", figures)
    assert quoted_pairs_errors("`no_such_key=1`", figures)
