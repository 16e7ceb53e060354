"""Imports run one way: shared modules -> training -> evaluation and segmentation, never back.

Every import statement of the repository's Python files is read with ``ast`` (imports inside functions
included), so a lazy import cannot hide a dependency against the grain.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = sorted(p for p in (REPO / "classification").glob("*.py"))
TRAINING = sorted((REPO / "classification" / "training").rglob("*.py"))
SEGMENTATION = sorted((REPO / "segmentation").glob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (``from a.b import c`` counts as ``a.b`` and ``a.b.c``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def is_under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_checker_sees_lazy_and_from_imports(tmp_path):
    source = tmp_path / "example.py"
    source.write_text("import segmentation.eval\n\ndef f():\n    from classification.eval import demo\n")
    assert imported_modules(source) == {"segmentation.eval", "classification.eval", "classification.eval.demo"}


@pytest.mark.parametrize("path", TRAINING, ids=lambda p: str(p.relative_to(REPO)))
def test_training_imports_neither_segmentation_nor_evaluation(path):
    """The training package, train.py included, knows nothing of segmentation or classification.eval (train.py
    finds the segmentation validators through an entry point)."""
    bad = [m for m in imported_modules(path) if is_under(m, "segmentation") or is_under(m, "classification.eval")]
    assert not bad, f"{path.relative_to(REPO)} imports {bad}"


@pytest.mark.parametrize("path", SHARED, ids=lambda p: str(p.relative_to(REPO)))
def test_shared_modules_import_no_task_package(path):
    """classification/*.py (classifiers, paths, checkpoint, distributed, samples ...) serve every task and
    import none of them: not the training package, not the evaluation, not segmentation."""
    bad = [m for m in imported_modules(path)
           if any(is_under(m, p) for p in ("classification.training", "classification.eval", "segmentation"))]
    assert not bad, f"{path.relative_to(REPO)} imports {bad}"


@pytest.mark.parametrize("path", SEGMENTATION, ids=lambda p: str(p.relative_to(REPO)))
def test_segmentation_imports_not_the_classification_evaluation(path):
    """Segmentation and the classification evaluation are siblings: what both need lives in the shared modules."""
    bad = [m for m in imported_modules(path) if is_under(m, "classification.eval")]
    assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_the_rules_cover_the_modules_they_name():
    names = {p.name for p in SHARED}
    assert {"classifiers.py", "distributed.py", "samples.py", "atomic.py", "checkpoint.py", "rgb8.py"} <= names
    assert any(p.name == "cityscapes.py" for p in SEGMENTATION)
    assert any(p.name == "engine.py" for p in TRAINING) and any(p.name == "train.py" for p in TRAINING)
