"""A run directory's identity and ownership: which settings define a run, the lock that keeps a second process
out, and the clean-up that leaves nothing behind when a run is refused."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Any

from cft.errors import RunDirError

# Keys that name or place a run rather than define it: excluded from the run-name hash.
NON_DEFINING = ("config", "run", "ckpt_path", "trainer.logger", "trainer.callbacks", "trainer.enable_progress_bar")


def launch_rank() -> int:
    """This process's rank as set by the launcher (Lightning's re-launch, torchrun, srun), 0 when launched alone."""
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        value = os.environ.get(var, "0")
        if value.isdigit() and int(value) != 0:
            return int(value)
    return 0


_held_locks: list[Any] = []  # open lock files of this process's run directories (released in `main`)
_created_dirs: dict[Path, Path] = {}  # run dir -> the outermost directory this process created for it


def lock_run_dir(run_dir: Path) -> None:
    """Hold an exclusive lock on `<run>/.lock` while this process uses the run directory; the OS drops it when the
    process ends, however it ends, so a requeued job finds it free."""
    if any(Path(fh.name).parent == run_dir for fh in _held_locks):
        return  # this process runs in it already (CFTCLI called twice in one process)
    missing = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if missing:
            _created_dirs[run_dir] = missing[-1]
        fh = open(run_dir / ".lock", "a+")  # noqa: SIM115 - held open for the life of the run
    except OSError as e:
        raise RunDirError(f"run directory {run_dir} cannot be created: {e.strerror or e}") from e
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            # A file system without locks (some NFS setups): run unguarded rather than refuse every run.
            print(
                f"[cft] warning: cannot lock {run_dir / '.lock'} ({e.strerror}); not guarded against a second process"
            )
            fh.close()
            return
        fh.seek(0)
        owner = fh.read().strip() or "another process"
        fh.close()
        raise RunDirError(
            f"run directory {run_dir} in use by {owner}; wait for it to end or use another --run.name"
        ) from e
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
    fh.flush()
    _held_locks.append(fh)


def release_run_locks() -> None:
    """Release the run-directory locks this process holds (a run started in-process, e.g. by tests, has ended)."""
    while _held_locks:
        fh = _held_locks.pop()
        run_dir = Path(fh.name).parent
        fh.close()
        if run_dir.is_dir() and [p.name for p in run_dir.iterdir()] == [".lock"]:
            (run_dir / ".lock").unlink(missing_ok=True)  # refused before anything was written: leave no trace
        top = _created_dirs.pop(run_dir, run_dir)
        for d in (run_dir, *run_dir.parents):  # with the empty parents this process made for it (run.root, ...)
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
            if d == top:
                break


def defining(cfg: dict) -> dict[str, str]:
    """Flattened settings that define a run (without the keys that only name or place it)."""
    flat = flatten(cfg)
    flat.pop("trainer.default_root_dir", None)  # set from the run dir, which is the same dir however it is spelled
    return {k: v for k, v in flat.items() if not any(k == n or k.startswith(n + ".") for n in NON_DEFINING)}


def check_run_dir(run_dir: Path) -> None:
    """The run dir, or its nearest existing ancestor, must be a writable directory."""
    for p in (run_dir, *run_dir.parents):
        if p.exists():
            if not p.is_dir():
                raise RunDirError(f"run directory {str(run_dir)!r}: {str(p)!r} is a file, not a directory (run.root)")
            if not os.access(p, os.W_OK | os.X_OK):
                raise RunDirError(f"run directory {str(run_dir)!r}: {str(p)!r} is not writable (run.root)")
            return


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = repr(v)
    return out
