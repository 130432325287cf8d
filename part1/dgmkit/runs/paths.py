"""The paths a run records, and how a record's path is found again: the one place that knows (RunDir knows the
run folder's own layout; this module the paths its files name).

What is recorded. Every path a run writes down is relative to the folder of the record, computed from the
resolved (absolute, link-free) path and the resolved folder with os.path.relpath:

    args.json and every checkpoint's args   data_dir, log_dir, resume   relative to the run folder (a
                                                                          checkpoint's too, not checkpoints/)
    eval_<split>.json (training's test       checkpoint, data_dir         relative to the run folder
        phase and evaluate.py)
    benchmark.py's JSON                      the data folder and the      relative to the folder of the JSON
                                             paths in "command"           file itself (--out's own folder)

So a new run records log_dir "..", a resumed run resume ".", its best checkpoint "checkpoints/best.pt", and the
default data folder of a run under part1/VAE_logs/ "../../../data".

Why. A record must stay true where it is read: in a reader's clone of the repository, or after the run folder
was copied to another machine. The run folder is what travels, so a path relative to it stays right wherever
the folder and its data keep their places relative to each other (report/runs/ and ../shared/data in a clone;
logs/ and data/ in an archive), and it names nothing of the writing machine. An absolute path names the writer's
home, user and checkout and is wrong everywhere else; a path as typed is relative to a working folder that no
record keeps. (Paths on another Windows drive have no relative form and are recorded absolute.)

How a record is read (`resolve`; the data folder: dgmkit/data/folders.py's `resolve_data_dir`). An absolute path (every record of older versions holds
them) is used as it is, exactly as before. A relative one is resolved against the run folder where it is now.
The data folder also accepts the relative form older versions recorded (as typed, relative to the folder the
command ran in): when the dataset is not found against the run folder, find_data_dir's lookups
follow (the current folder, the repository root, part1/); when neither finds it, the run folder's reading is
returned, so that the one-line error names where the record points. A --data_dir given on the command line
always wins over the record. A checkpoint moved out of its run folder's checkpoints/ reads its relative paths
against its own folder (RunDir.of_checkpoint): give --data_dir there.
"""
import os
from pathlib import Path

from dgmkit.cli.args import absolute


RECORDED = ("data_dir", "log_dir", "resume")  # the settings that are paths (args.json, checkpoints' args)


def record(path, folder):
    """The recorded form of `path` (absolute, or relative to the current folder) in a record kept in `folder`:
    relative to `folder`, as a string; None stays None."""
    if path is None:
        return None
    target, base = absolute(path), absolute(folder)
    try:
        return os.path.relpath(target, base)
    except ValueError:  # Windows: another drive has no relative form
        return str(target)


def record_settings(settings, run_dir):
    """A settings dict (RunConfig.to_dict's) with its paths (RECORDED) in their recorded form for the run folder
    `run_dir`: what args.json and every checkpoint hold. A new dict; the keys and their order are kept."""
    return {name: record(value, run_dir) if name in RECORDED else value for name, value in settings.items()}


def resolve(recorded, run_dir):
    """A path read from a record of the run folder `run_dir`, as an absolute Path: an absolute one as it is (older
    records), a relative one against the run folder where it is now; None stays None."""
    if recorded is None:
        return None
    path = Path(recorded).expanduser()
    if path.is_absolute():
        return path
    return absolute(Path(absolute(run_dir)) / path)


def record_command(argv, typed_paths, folder):
    """A command line (sys.argv; the program as its file name) for a record kept in `folder`: every argument that
    is one of `typed_paths` (a path the user typed: alone, or as --flag=PATH) in its recorded form."""
    typed = {Path(p) for p in typed_paths if p is not None}

    def shown(token):
        flag, equals, value = token.partition("=")
        if equals and flag.startswith("-") and value and Path(value) in typed:
            return f"{flag}={record(value, folder)}"
        return record(token, folder) if token and not token.startswith("-") and Path(token) in typed else token
    return " ".join([Path(argv[0]).name, *map(shown, argv[1:])])


def same_folder(typed, recorded_resolved):
    """Whether a path the user typed (relative: to the current folder) and a record's resolved path name the same
    folder."""
    if typed is None or recorded_resolved is None:
        return typed is None and recorded_resolved is None
    return absolute(typed) == absolute(recorded_resolved)
