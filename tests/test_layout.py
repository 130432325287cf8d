"""The tests mirror the code, and the project installs what it should.

Layout: the test of part1/dgmkit/<wing>/<module>.py is tests/<wing>/test_<module>.py (more files of it may follow
as tests/<wing>/test_<module>_<part>.py), of a package-root module part1/dgmkit/<module>.py tests/test_<module>.py,
and of a top-level part1/<name>.py tests/test_<name>.py. End-to-end runs of the CLI and the bad-input tables have
tests/end_to_end/ of their own; the report's tests are tests/report/'s. A new module fails here until its test
file exists (with real tests: write them rather than exempting the module).
"""
import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PART1

TESTS = Path(__file__).resolve().parent
DGMKIT = PART1 / "dgmkit"
OWN_FOLDERS = ("end_to_end", "report")  # test folders that mirror no wing of dgmkit


def modules():
    """(module, its test file) for every module of part1/dgmkit/ and every top-level module of part1/."""
    pairs = [(m, TESTS / m.relative_to(DGMKIT).parent / f"test_{m.name}") for m in sorted(DGMKIT.rglob("*.py"))
             if m.name != "__init__.py" and "__pycache__" not in m.parts]
    return pairs + [(m, TESTS / f"test_{m.name}") for m in sorted(PART1.glob("*.py"))]


def defined_tests(path):
    """The names of the test functions a file defines at its top level."""
    tree = ast.parse(path.read_text())
    return [node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]


def test_every_module_has_its_test_file():
    root = PART1.parent
    missing = [f"{m.relative_to(root)} -> {t.relative_to(root)}" for m, t in modules() if not t.is_file()]
    assert not missing, ("modules without their test file (write one, with tests of what the module does): "
                         + "; ".join(missing))
    empty = [str(t.relative_to(TESTS)) for _, t in modules() if not defined_tests(t)]
    assert not empty, f"test files without a test function: {empty}"


def test_every_test_file_mirrors_a_module():
    """The converse: a test file in a wing's folder names a module of that wing, one at tests/ a module of part1/ or
    of the package root (or this file); so a renamed or removed module leaves no test file behind."""
    strays = []
    for path in sorted(TESTS.rglob("test_*.py")):
        folder = path.parent.relative_to(TESTS)
        if folder.parts and folder.parts[0] in OWN_FOLDERS:
            continue
        code = DGMKIT / folder if folder.parts else None
        names = ({m.stem for m in code.glob("*.py")} if code else
                 {m.stem for m in PART1.glob("*.py")} | {m.stem for m in DGMKIT.glob("*.py")} | {"layout"})
        subject = path.stem[len("test_"):]
        if not any(subject == name or subject.startswith(f"{name}_") for name in names - {"__init__"}):
            strays.append(str(path.relative_to(TESTS)))
    assert not strays, f"test files that mirror no module (move them next to their subject): {strays}"


def test_every_test_folder_is_a_package():
    """Test files of the same name in several folders (test_model.py of vae/, realnvp/, gan/) must not collide."""
    folders = {path.parent for path in TESTS.rglob("test_*.py")} - {TESTS}
    missing = [str(f.relative_to(TESTS)) for f in sorted(folders) if not (f / "__init__.py").is_file()]
    assert not missing, f"test folders without an __init__.py (their test files' names would collide): {missing}"


ASSIGNMENT_MODULES = ["cnn_encoder_decoder", "fmnist", "train_torch", "utils"]  # the course's own module names


def test_pyproject_installs_one_package_and_the_assignments_modules():
    """Only dgmkit and the assignment's module names reach site-packages; every other top-level file of part1/ is a
    script (run, never imported), so a user's own utils-like names do not collide with more of ours."""
    text = (PART1 / "pyproject.toml").read_text()
    listed = re.findall(r'"(\w+)"', text[text.index("py-modules"):text.index("[tool.setuptools.packages.find]")])
    assert sorted(listed) == ASSIGNMENT_MODULES
    assert 'include = ["dgmkit*"]' in text
    scripts = sorted(p.stem for p in PART1.glob("*.py") if p.stem not in ASSIGNMENT_MODULES)
    assert scripts == ["benchmark", "evaluate", "sweep", "train_gan", "train_realnvp"]
    for name in scripts:
        assert 'if __name__ == "__main__":' in (PART1 / f"{name}.py").read_text(), name


@pytest.mark.slow  # a fresh interpreter importing torch: seconds
def test_the_installed_library_exposes_no_script_module(tmp_path):
    """Imported from a folder outside the checkout (so only site-packages is searched): the package and the
    assignment's modules import, the scripts do not."""
    pytest.importorskip("importlib.metadata")
    import importlib.metadata
    try:
        importlib.metadata.distribution("dgm-vae-kit")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("part1/ is not installed (pip install -e ./part1, as requirements.txt does)")
    code = ("import importlib\n"
            "for name in ('dgmkit.vae.family', 'dgmkit.gan.family', 'dgmkit.realnvp.family', 'train_torch', 'utils'):\n"
            "    importlib.import_module(name)\n"
            "for name in ('evaluate', 'sweep', 'benchmark', 'train_gan', 'config', 'model', 'dataset', 'runs'):\n"
            "    try:\n        importlib.import_module(name)\n    except ImportError:\n        continue\n"
            "    raise SystemExit(f'{name} is importable')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_source_file_is_ignored_by_git():
    """Every .py file of part1/, report/ and tests/ is one git would commit: a .gitignore pattern such as an
    unanchored data/ once hid dgmkit/data/ and tests/data/ from commits (a clone then lacks them)."""
    root = PART1.parent
    sources = [str(p.relative_to(root)) for folder in ("part1", "report", "tests") for p in (root / folder).rglob("*.py")
               if "__pycache__" not in p.parts and ".egg-info" not in str(p)]
    try:
        found = subprocess.run(["git", "check-ignore", "--no-index", *sources], cwd=root, capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("git is not installed")
    if found.returncode == 128:
        pytest.skip("not a git checkout")
    assert found.stdout.split() == [], "ignored by .gitignore, so never committed: " + found.stdout


def test_every_familys_default_log_folder_is_ignored_and_shown_to_tensorboard():
    """Issue 25 #24: a new user's `git status` showed part1/RealNVP_logs/ and part1/GAN_logs/ (megabytes of
    checkpoints), and the README's TensorBoard command named only the VAE's folder."""
    from dgmkit.gan.config import GANConfig
    from dgmkit.realnvp.config import RealNVPConfig
    from dgmkit.vae.config import TrainConfig
    root = PART1.parent
    folders = [Path(config.defaults()["log_dir"]).relative_to(root).as_posix()
               for config in (TrainConfig, RealNVPConfig, GANConfig)]
    assert len(set(folders)) == 3, folders
    try:
        found = subprocess.run(["git", "check-ignore", "--no-index", *[f"{f}/run/checkpoints/last.pt" for f in folders]],
                               cwd=root, capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("git is not installed")
    if found.returncode == 128:
        pytest.skip("not a git checkout")
    assert len(found.stdout.split()) == 3, f"not ignored by git: {folders} -> {found.stdout!r}"
    readme = (root / "README.md").read_text()
    for folder in folders:
        assert f"tensorboard --logdir {folder}" in readme
