"""Skip every mutant of a cosmic-ray session outside the named functions (to spend a short run on the maths).

    python tests/mutation/focus.py SESSION.sqlite KLD elbo_to_bpd ...

Marks the other work items SKIPPED, as cosmic-ray's own cr-filter-* tools do; `cosmic-ray exec` then leaves them.
"""
import sys

from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import WorkerOutcome, WorkResult


def main(session, *functions):
    with use_db(session, WorkDB.Mode.open) as db:
        skipped = 0
        for item in db.pending_work_items:
            if all(m.definition_name not in functions for m in item.mutations):
                db.set_result(item.job_id, WorkResult(output="outside the focus functions",
                                                      worker_outcome=WorkerOutcome.SKIPPED))
                skipped += 1
    print(f"{skipped} mutants outside {', '.join(functions)} skipped")


if __name__ == "__main__":
    main(*sys.argv[1:])
