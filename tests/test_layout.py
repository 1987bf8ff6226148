"""The package's layers: the core at the top of cifar_lib/, the study and the report in
sub-packages that import it, never the other way round."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cifar_lib"
HEAVY = {"optuna", "pandas", "matplotlib", "seaborn", "weasyprint"}
CORE = sorted(p for p in PACKAGE.glob("*.py") if p.stem not in ("cli", "__main__"))


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports anywhere (top level or inside a function), as written:
    absolute names, or relative ones with their leading dots."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            names |= {module} if node.module else {module + a.name for a in node.names}
    return names


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_a_core_module_imports_neither_the_study_nor_the_report_nor_their_libraries(path):
    for name in imported_modules(path):
        top = name.lstrip(".").split(".")[0]
        assert top not in HEAVY, f"{path.name} imports {name}"
        assert top not in ("study", "report") and not name.startswith("cifar_lib."), \
            f"{path.name} imports {name}: the core points down only"


def test_the_study_never_imports_the_report():
    for path in (PACKAGE / "study").glob("*.py"):
        assert not any(n.lstrip(".").startswith("report") or n.startswith("cifar_lib.report")
                       for n in imported_modules(path)), path.name


def test_no_module_is_over_400_lines_and_no_function_over_80():
    long = {}
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        name = str(path.relative_to(PACKAGE))
        if len(text.splitlines()) > 400:
            long[name] = len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if (n := node.end_lineno - node.lineno + 1) > 80:
                    long[f"{name}:{node.name}"] = n
    assert not long


@pytest.mark.slow
def test_importing_the_core_and_the_cli_loads_no_study_library():
    modules = " ".join(f"cifar_lib.{p.stem}" for p in CORE if p.stem != "__init__")
    code = (f"import sys, importlib; [importlib.import_module(m) for m in '{modules} cifar_lib.cli'.split()]; "
            "print(sorted({m.split('.')[0] for m in sys.modules}))")
    loaded = set(eval(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                     check=True).stdout))
    assert "torch" in loaded and not HEAVY & loaded
