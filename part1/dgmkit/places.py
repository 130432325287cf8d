"""The checkout's own folders, fixed relative to the code: part1/ (the scripts, the default log folders) and the
repository root (the default data folder). Imports nothing."""
from pathlib import Path

PART1_DIR = Path(__file__).resolve().parents[1]  # part1/: this file is part1/dgmkit/places.py
REPO_ROOT = PART1_DIR.parent
