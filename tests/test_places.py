"""dgmkit/places.py: the checkout's folders, fixed relative to the code: part1/ (the scripts) and the repository root
(its parent), wherever the process runs from."""
import subprocess
import sys

from conftest import PART1, REPO_ROOT
from dgmkit import places


def test_the_folders_are_the_checkouts():
    assert places.PART1_DIR == PART1 and places.REPO_ROOT == REPO_ROOT  # tests/conftest.py's, from its own place
    assert (places.PART1_DIR / "train_torch.py").is_file() and (places.PART1_DIR / "dgmkit").is_dir()
    assert places.PART1_DIR.is_absolute() and places.PART1_DIR.parent == places.REPO_ROOT


def test_they_do_not_depend_on_the_current_folder(tmp_path):
    out = subprocess.run([sys.executable, "-c", "from dgmkit import places; print(places.PART1_DIR)"], cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(PART1)
