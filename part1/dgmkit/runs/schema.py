"""The fields of a run's JSON files and their types, checked where a file is read (runs/folder.py), so that a
damaged or foreign file is one line naming the file and the field, never a KeyError or TypeError later.
null stands for "none" (e.g. the standard error of a single image). Imports nothing of the project but dgmkit.errors.
"""
from dgmkit.errors import UserError

NUMBER = (int, float)
HISTORY_FIELDS = {"epoch": int, "seconds": NUMBER, **{f"{split}_{name}": NUMBER for split in ("train", "val")
                                                       for name in ("bpd", "rec_nats", "kl_nats", "objective_bpd")}}
METRICS_FIELDS = {**{name: NUMBER for name in ("test_bpd", "test_rec_nats", "test_kl_nats", "test_iw_bpd",
                                               "test_iw_bpd_se", "best_val_bpd", "seconds_per_epoch", "wall_time_s")},
                  **{name: int for name in ("test_active_units", "iw_samples", "best_epoch", "epochs")},
                  "device": str, "machine": dict}
EVAL_FIELDS = {**{name: NUMBER for name in ("bpd", "bpd_se", "nelbo_nats", "nelbo_nats_se", "iw_bpd", "iw_bpd_se",
                                            "iw_nats", "iw_nats_se", "gap_bpd", "gap_bpd_se", "rec_nats", "kl_nats",
                                            "wall_time_s")},
               **{name: int for name in ("num_images", "iw_samples", "active_units", "epoch", "seed", "batch_size",
                                         "chunk_size")},
               **{name: int for name in ("bits",)},
               **{name: str for name in ("checkpoint", "split", "data_dir", "device", "dataset", "written_by")},
               "per_class": dict, "latents": dict, "pictures": dict, "per_image_iw_bpd": list}


def check_fields(record, fields, where, required=()):
    """A one-line UserError naming `where` and the field unless every field in `required` is present (not null)
    and every field of `fields` that is present has its type (bool is not a number; lists of numbers checked)."""
    for name in required:
        if record.get(name) is None:
            raise UserError(f"{where} lacks {name!r}; the file is damaged or from another program (rerun to rewrite it)")
    for name, kind in fields.items():
        value = record.get(name)
        if value is None:
            continue
        bad = isinstance(value, bool) or not isinstance(value, kind)
        if not bad and isinstance(value, list):
            bad = not all(isinstance(v, NUMBER) and not isinstance(v, bool) for v in value)
        if bad:
            raise UserError(f"{where}: {name!r} is {str(value)[:40]!r}, not {_kind_name(kind)}; the file is damaged")


def _kind_name(kind):
    return {int: "an integer", str: "a string", dict: "an object", list: "a list of numbers"}.get(kind, "a number")
