"""No committed file under report/ holds an absolute path of the machine that wrote it: run records name their
paths relative to their run folder, benchmark JSON relative to its own folder (dgmkit/runs/paths.py), so a
reader's clone shows nobody's folders. Scans `git ls-files report` (every file under report/ without git)."""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
REPORT = REPO_ROOT / "report"
# The start of an absolute path in text: a machine's home, checkout, temporary or Windows folder, not inside a
# relative path (../../tmp/x is relative) or a word.
ABSOLUTE_IN_TEXT = re.compile(r"(?<![\w.~/\\-])(?:/(?:home|work|tmp|root|Users)/|[A-Za-z]:\\)")


def committed_files():
    """The committed files under report/ (git ls-files), or every file there where git or the repository is
    missing (an exported copy)."""
    if shutil.which("git"):
        listed = subprocess.run(["git", "ls-files", "-z", "report"], cwd=REPO_ROOT, capture_output=True)
        if listed.returncode == 0 and listed.stdout:
            return [REPO_ROOT / name for name in listed.stdout.decode().split("\0") if name]
    return sorted(p for p in REPORT.rglob("*") if p.is_file())


def json_strings(value):
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from json_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from json_strings(item)
    elif isinstance(value, str):
        yield value


def in_text(text):
    """Every absolute path ABSOLUTE_IN_TEXT finds in a text, to the end of its word."""
    return [text[m.start():].split(None, 1)[0].strip("\"'`,;()[]") for m in ABSOLUTE_IN_TEXT.finditer(text)]


def absolute_paths(path):
    """The absolute paths one file holds. JSON (a .json file, each line of a .jsonl file): every string (key or
    value) that os.path.isabs calls absolute, and those in_text finds inside strings; any other text (or JSON
    that does not parse): in_text of the whole text. A file that is not UTF-8 text (a picture) holds none."""
    try:
        text = path.read_bytes().decode()
    except (OSError, UnicodeDecodeError):
        return []
    try:
        documents = ([json.loads(text)] if path.suffix == ".json" else
                     [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl"
                     else None)
    except json.JSONDecodeError:
        documents = None
    if documents is None:
        return in_text(text)
    found = []
    for string in (s for document in documents for s in json_strings(document)):
        for candidate in ([string] if os.path.isabs(string) else []) + in_text(string):
            if candidate not in found:
                found.append(candidate)
    return found


def test_the_scan_finds_absolute_paths(tmp_path):
    record = tmp_path / "args.json"
    record.write_text(json.dumps({"data_dir": "/srv/data", "log_dir": "..", "note": "from /home/me/x, ok",
                                  "command": "benchmark.py --out C:\\runs\\b.json", "rel": "../../tmp/data"}))
    assert sorted(absolute_paths(record)) == ["/home/me/x", "/srv/data", "C:\\runs\\b.json"]
    (tmp_path / "notes.md").write_text("see `/work/someone/report` and ../shared/data\n")
    assert absolute_paths(tmp_path / "notes.md") == ["/work/someone/report"]


def test_no_committed_report_file_holds_an_absolute_path():
    files = committed_files()
    assert any(p.name == "args.json" for p in files), "no run record found under report/"
    offending = {str(p.relative_to(REPO_ROOT)): found for p in files if (found := absolute_paths(p))}
    assert not offending, "absolute paths in committed files (record them relative: dgmkit/runs/paths.py): " + \
        "; ".join(f"{name}: {', '.join(map(repr, found))}" for name, found in sorted(offending.items()))
