"""`python hang_run.py WHERE STEP ARGS...` runs `ratlm ARGS`, but at step STEP marks `hang-STEP` in the
checkpoint folder and sleeps, to be killed there: WHERE is after-save (the checkpoint of STEP is
written) or in-save (its temporary file is written, not yet renamed into place). The resume tests
use it; production code has no hook for it."""
import os
import sys
import time

from ratlm.cli import main
from ratlm.train import checkpoint as ck


def hang(folder, step):
    open(os.path.join(folder, f"hang-{step}"), "w").close()
    time.sleep(3600)


def patch(where, step):
    if where == "after-save":
        save = ck.save

        def save_then_hang(folder, s, payload, keep_last):
            path = save(folder, s, payload, keep_last)
            if s == step:
                hang(folder, s)
            return path

        ck.save = save_then_hang
    elif where == "in-save":
        replace = os.replace

        def hang_then_replace(src, dst, *a, **kw):
            if os.path.basename(dst) == os.path.basename(ck.path_for("", step)):
                hang(os.path.dirname(dst), step)
            return replace(src, dst, *a, **kw)

        os.replace = hang_then_replace
    else:
        raise SystemExit(f"unknown place {where!r}")


if __name__ == "__main__":
    patch(sys.argv[1], int(sys.argv[2]))
    sys.exit(main(sys.argv[3:]))
