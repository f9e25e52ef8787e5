"""Which directories keras_vit writes into: `claim_directory`, the one check
that every command runs before it writes or deletes anything in a folder.

The rule: a command writes only inside a directory that is new, empty, or
ours, and never in (or around) an input it reads. A directory is ours when
it carries the marker file ``.keras_vit.dir`` (written when a command
first claims it), or when it holds what an earlier version of keras_vit
wrote there without a marker (recognised by its content; the marker is
then added). A preset directory is marked by its own ``config.json``
instead, and must hold nothing but a preset's files, since saving replaces
it whole. Anything else is refused with a `ValueError` (the CLI's exit 2)
that names the directory and the flag, before anything is written.

Starting over (``--restart``, ``--overwrite``) deletes only the entries of
the kind's known names (`owned_entries`): a file a user put into a run
directory is never deleted.
"""

import dataclasses
import fnmatch
import json
import os
from pathlib import Path

# A run directory's resume state: `RunBackup` (keras_vit.training.rundir)
# commits each epoch to BACKUP/STATE_FILE; a search keeps one per trial.
BACKUP, STATE_FILE = "backup", "training_metadata.json"

MARKER_NAME = ".keras_vit.dir"
PRESET_FORMAT_PREFIX = "keras_vit.preset/"


def _read_json(path):
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _legacy_run(path):
    """A run directory written before the marker: its backup, or its
    ``config.json`` as `train` writes it; or a fine-tune's directory that
    holds its ``head`` stage's run."""
    state = _read_json(path / BACKUP / STATE_FILE)
    if state is not None and {"epoch", "weights"} <= set(state):
        return True
    config = _read_json(path / "config.json")
    if config is not None and {"epochs", "learning_rate", "monitor"} <= set(config):
        return True
    head = path / "head"  # a fine-tune stopped in its head-only stage
    return head.is_dir() and ((head / MARKER_NAME).is_file() or _legacy_run(head))


def _legacy_tuning(path):
    """A tuning project written before the marker: KerasTuner's oracle,
    a trial, or our results."""
    if _read_json(path / "oracle.json") is not None:
        return True
    if any(p.is_file() for p in path.glob("trial_*/trial.json")):
        return True
    results = _read_json(path / "results.json")
    return results is not None and {"objective", "trials"} <= set(results)


def _preset(path):
    config = _read_json(path / "config.json")
    return config is not None and str(config.get("format", "")).startswith(PRESET_FORMAT_PREFIX)


@dataclasses.dataclass(frozen=True)
class DirectoryKind:
    """A kind of directory keras_vit writes.

    Args:
        name: how messages name it ("run directory").
        entries: glob patterns of the entries this kind writes; the only
            ones starting over deletes.
        recognise: `Path -> bool`, whether an unmarked directory holds what
            an earlier version of keras_vit wrote.
        marker: write `MARKER_NAME` when claiming (False: the content is the
            mark, as a preset's ``config.json``).
        whole: every entry must be one of `entries` (the directory is
            replaced as a whole when written).
    """

    name: str
    entries: tuple
    recognise: object = None
    marker: bool = True
    whole: bool = False


RUN_DIR = DirectoryKind(
    "run directory",
    (BACKUP, "checkpoints", "logs", "history.csv", "history.png", "metrics.json", "model.keras",
     "config.json", "plan.json", "head", "workers"),
    _legacy_run)
TUNING_PROJECT = DirectoryKind(
    "tuning project",
    ("oracle.json", "tuner*.json", "chief*.json", "worker*.json", "trial_*", "results.csv", "results.json",
     "trials.png", "best_model.keras", "logs"),
    _legacy_tuning)
PRESET_DIR = DirectoryKind(
    "preset directory", ("config.json", "model.weights.h5", "preprocessing.json"), _preset,
    marker=False, whole=True)


def _bookkeeping(name):
    """Hidden entries of our own that do not make a directory non-empty:
    the marker, lock files, and the temporaries of killed atomic writes."""
    return name.startswith(".keras_vit.") or (name.startswith(".") and (".tmp-" in name or ".old-" in name))


def _ours_only(entry):
    """Whether `entry` holds nothing a user wrote: our bookkeeping, or a
    folder carrying the marker (another worker's or a fine-tune's head-stage
    run directory), or a folder of only such entries (e.g. temporaries)."""
    if _bookkeeping(entry.name):
        return True
    if not entry.is_dir() or entry.is_symlink():
        return False
    return (entry / MARKER_NAME).is_file() or all(_ours_only(child) for child in entry.iterdir())


def _matches(name, kind):
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in kind.entries)


def owned_entries(path, kind):
    """The entries of `path` that `kind` writes (what starting over may
    delete), sorted.

    Example:
    >>> owned_entries("/nonexistent", RUN_DIR)
    []
    """
    path = Path(path)
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if _matches(p.name, kind))


def _flag_text(flag):
    return f" (`{flag}`)" if flag else ""


def check_directory_name(value, flag):
    """Refuses an empty string for a directory (which would silently mean the
    current directory), naming `flag`.

    Example:
    >>> check_directory_name("", "--run-dir")
    Traceback (most recent call last):
    ...
    ValueError: `--run-dir` is an empty string, which would mean the current directory; name a directory.
    """
    if value is None or (isinstance(value, (str, bytes, os.PathLike)) and not os.fspath(value)):
        raise ValueError(f"`{flag}` is {'missing' if value is None else 'an empty string'}, which would mean the "
                         "current directory; name a directory.")


def _overlap(target, source):
    """How `target` and the input `source` overlap, or None."""
    if target == source:
        return "is"
    if source in target.parents:
        return "lies inside"
    if target in source.parents:
        return "holds"
    return None


def _check_location(path, where):
    """Refuses a directory that could not be created: a name longer than the
    file system takes, a dangling symbolic link, or a path under a file."""
    too_long = [part for part in path.parts if len(os.fsencode(part)) > 255]
    if too_long:
        raise ValueError(f"{where} has a name of {len(os.fsencode(too_long[0]))} bytes; file systems take at "
                         "most 255 bytes per name. Choose a shorter name.")
    if path.is_symlink() and not path.exists():
        raise ValueError(f"{where} is a symbolic link to {os.readlink(path)!r}, which does not exist; "
                         "name a directory.")
    ancestor = path.absolute()
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor != path.absolute() and not ancestor.is_dir():  # the path itself a file: said by the caller
        raise ValueError(f"{where} lies under {str(ancestor)!r}, which is a file, not a directory.")


def claim_directory(path, kind=RUN_DIR, *, inputs=(), flag=None, mark=True):
    """Checks that a command may write into the directory `path`, then
    (with `mark`) creates it if missing and marks it as ours.

    Allowed: a missing or empty directory (hidden bookkeeping of ours and
    folders of only that, or marked, aside), one carrying the marker, or one `kind.recognise` knows as
    written by an earlier version (the marker is then added). Refused with a
    `ValueError` naming `flag`: an empty name, a file, anything else, and a
    directory that is, lies inside or holds one of `inputs` (paths the
    command reads; those that are not existing paths are ignored).

    Args:
        path: the directory.
        kind: a `DirectoryKind` (`RUN_DIR`, `TUNING_PROJECT`, `PRESET_DIR`).
        inputs: paths the command reads.
        flag: the argument or flag that named `path`, for the messages.
        mark: create the directory and write the marker (False: check
            only, e.g. to refuse early before a long load).

    Returns:
        `Path(path)`.

    Example:
    >>> import tempfile
    >>> folder = claim_directory(Path(tempfile.mkdtemp()) / "run", flag="run_dir")
    >>> sorted(p.name for p in folder.iterdir())
    ['.keras_vit.dir']
    """
    check_directory_name(path, flag or "directory")
    path = Path(path)
    where = f"The {kind.name} {str(path)!r}{_flag_text(flag)}"
    _check_location(path, where)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{where} names a file, not a directory.")
    target = Path(os.path.realpath(path))
    for source in inputs:
        if not isinstance(source, (str, os.PathLike)) or not os.fspath(source) or not os.path.exists(source):
            continue
        how = _overlap(target, Path(os.path.realpath(source)))
        if how:
            raise ValueError(f"{where} {how} the input {os.fspath(source)!r} that this command reads; keras_vit "
                             f"never writes where it reads. Choose another {kind.name}.")
    known = path.is_dir() and (path / MARKER_NAME).is_file()
    if path.is_dir() and not known:
        others = sorted(p.name for p in path.iterdir() if not _ours_only(p))
        if others and not (kind.recognise is not None and kind.recognise(path)):
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise ValueError(
                f"{where} already holds files that keras_vit did not write ({shown}); refusing to write or "
                f"delete anything there. Name a new or empty directory.")
    if kind.whole and path.is_dir():
        foreign = sorted(p.name for p in path.iterdir() if not _bookkeeping(p.name) and not _matches(p.name, kind))
        if foreign:
            raise ValueError(f"{where} holds files that are not part of a {kind.name} ({', '.join(foreign[:5])}); "
                             "saving replaces the directory as a whole, so it is refused. Move them, or "
                             "name another directory.")
    if mark and kind.marker and not known:
        from keras_vit._install import __version__
        from keras_vit.utils.io import make_directory, write_json

        make_directory(path, kind.name)
        write_json(path / MARKER_NAME, {"kind": kind.name, "written_by": f"keras_vit {__version__}"})
    return path
