"""Atomic file writes that never follow a link: the one primitive every file of a run goes through.

A write goes to a temporary file that is *created* for it (tempfile.mkstemp: O_CREAT | O_EXCL, a fresh
random name in the destination's folder, so a link planted at a guessable name such as `best.pt.tmp` is
never opened), is flushed and fsynced, then renamed over the destination with os.replace (atomic on POSIX;
rename replaces a link itself and never writes through it). A crash, a full disk or a signal leaves the
old file or the new one, never a torn one, and no temporary file once the process unwinds; every refusal of
the storage (however the writer reports it: torch.save wraps it in a RuntimeError) is one line naming the file.

It refuses, in one line (a UserError, exit status 2), to replace a destination that is a symbolic link or a
folder, and to write into a folder that is a symbolic link: the folders a run writes into are either the
ones the user named (the scripts resolve those once, where they enter) or ones the run made itself, and
neither is ever a link, so a link there was planted and following it could overwrite a file elsewhere.
"""
import json
import math
import os
import tempfile
from pathlib import Path

import torchvision

from dgmkit.errors import UserError, first_line

TMP_SUFFIX = ".tmp"


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open(path, "w") would have given; mkstemp's own is 0o600


def check_destination(path):
    """A one-line UserError if `path` is a link or a folder, or its folder is a link or missing."""
    path = Path(path)
    if path.parent.is_symlink():
        raise UserError(f"refusing to write {path}: its folder {path.parent} is a symbolic link, which a run "
                        "never creates; remove the link (or name the real folder)")
    if path.is_symlink():
        raise UserError(f"refusing to write {path}: it is a symbolic link (to {os.readlink(path)}) and writing "
                        "would replace or overwrite what it points to; remove the link")
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder; remove or rename it")
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: the folder {path.parent} does not exist")


def atomic_write(path, write):
    """Write through `write(binary file)` into a fresh temporary file beside `path`, fsync, rename over `path`.

    On any failure or signal the temporary file is removed and `path` keeps its old content; an OSError
    becomes a one-line UserError naming the file.
    """
    path = Path(path)
    check_destination(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or first_line(error)} (free disk space or fix "
                        "the folder's permissions)") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _FILE_MODE)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as error:
        _unlink(tmp)
        cause = storage_error(error)
        if cause is None:
            raise  # a bug, not the disk: its traceback is wanted
        raise UserError(f"cannot write {path}: {cause.strerror or first_line(cause)}; {path.name} is unchanged "
                        "(free disk space or fix the folder's permissions)") from None
    except BaseException:  # a signal while writing: no temporary file is left behind
        _unlink(tmp)
        raise


def storage_error(error):
    """The OSError behind a failed write, or None. Writers that wrap the file in their own code report the disk's
    refusal in their own exception: torch.save's zip writer raises a RuntimeError ("unexpected pos ...") whose
    __context__ is the OSError (ENOSPC on a full disk, EFBIG past `ulimit -f`), so the chain is searched."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _unlink(tmp):
    try:
        os.unlink(tmp)
    except OSError:
        pass


def write_bytes(path, data):
    atomic_write(path, lambda f: f.write(data))


def write_text(path, text):
    write_bytes(path, text.encode())


def write_png(path, grid):
    """A [3, H, W] float image in [0, 1] as a PNG (torchvision's encoder)."""
    atomic_write(path, lambda f: torchvision.utils.save_image(grid, f, format="png"))


def write_json(path, obj):
    """`obj` as indented, strict JSON (NaN/Inf become null)."""
    write_text(path, json.dumps(json_safe(obj), indent=2) + "\n")


def json_safe(obj):
    """NaN/inf -> None, recursively, so the file is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def remove_stale_tmp(folder):
    """Delete the temporary files a process killed by SIGKILL left behind (their targets are intact): this
    module's `.<name>.<random>.tmp` and the `<name>.tmp` of earlier versions. Links are removed, not followed."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return
    for entry in os.scandir(folder):
        if entry.name.endswith(TMP_SUFFIX) and not entry.is_dir(follow_symlinks=False):
            _unlink(entry.path)


def check_writable(path, flag=""):
    """A one-line UserError unless `path` (a file to be written later) can be created: its nearest existing
    ancestor must be a folder we can create files in. Creates nothing, so a refused run leaves no trace."""
    path = Path(path)
    what = f"{flag} {path}" if flag else str(path)
    if path.is_dir():
        raise UserError(f"cannot write {what}: it is a folder; give a file path")
    if path.is_symlink():
        raise UserError(f"cannot write {what}: it is a symbolic link; give the real file's path")
    parent = next(p for p in [path.parent, *path.parent.parents] if p.exists() or p.is_symlink())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {what}: {parent} is not a writable folder; choose another path")
