"""
The files a run writes and reads, checked before any work: each output's folder writable (made if
need be) and of its kind, no output inside an input or inside a dataset or a trajectory set, one
writer per output for the whole run (a lock the kernel drops when the run ends, however it ends)
and no writer under a run that reads. Plain files and no torch: prepare.py needs nothing more.
"""
import json
import os
import re
import socket
import sys
import time
from contextlib import ExitStack, contextmanager
from typing import Callable, NamedTuple

from configurator import CDLMError

MADE = set()  # the folders this process made (check_writable): a run that fails leaves them if empty


def check_no_way_up(path, what):
    """A '..' after a folder that does not exist leads nowhere (the system resolves it in the folder,
    where os.path.abspath drops both): refused before any folder is made."""
    parts = path.split(os.sep)
    for i in (i for i, part in enumerate(parts) if part == ".."):
        above = os.sep.join(parts[:i]) or (os.sep if path.startswith(os.sep) else ".")
        if not os.path.isdir(above):
            raise CDLMError(f"{what} {path!r} goes up ('..') out of {above!r}, which does not exist: give the "
                            f"path without it")


def check_writable(path, what, shown=None):
    """Make the directory path and prove a file can be written there, before any work is done; an
    error names `shown` (a file output's own path) or path. Under torchrun only rank 0 writes files,
    so only rank 0 checks."""
    if int(os.environ.get("RANK", 0)) != 0:
        return
    shown = shown or path
    check_no_way_up(shown, what)
    up = os.path.abspath(path)
    while not os.path.lexists(up):  # the nearest part of the path that exists must be a folder
        up = os.path.dirname(up)
    if not os.path.isdir(up):
        named = "is" if up == os.path.abspath(shown) else f"sits in {up!r}, which is"
        if os.path.islink(up):  # a link to nothing: no folder there, and none to make
            raise CDLMError(f"{what} {shown!r} {named} a symbolic link to {os.readlink(up)!r}, which does not exist: "
                            f"make that folder or give another")
        raise CDLMError(f"{what} {shown!r} {named} a file, not a folder: give a folder")
    probe, new = os.path.join(path, f".write_test_{os.getpid()}"), []
    try:
        if not os.path.isdir(path):
            d = os.path.abspath(path)
            while not os.path.lexists(d):  # every level this run makes, deepest first
                new, d = new + [d], os.path.dirname(d)
            os.makedirs(path)
            MADE.update(os.path.realpath(d) for d in new)
        with open(probe, "wb") as f:
            f.write(b"ok")
            f.flush()
            os.fsync(f.fileno())  # a full disk shows here, not at close
    except OSError as e:
        if os.path.lexists(probe):
            os.remove(probe)
        for d in new:  # a refusal leaves none of the folders it made (a full disk lets mkdir through)
            if os.path.isdir(d) and not os.listdir(d):
                os.rmdir(d)
        raise CDLMError(f"{what} {shown!r} is not writable: {e.strerror or e}") from None
    finally:
        if os.path.lexists(probe):
            os.remove(probe)  # even when the write failed: no stray probe on a full disk


def check_file_writable(path, what):
    """A file output: not a directory, not a file that cannot be replaced (write-protected, or
    immutable: found at the end of a run, its work would be lost), its directory writable (made if
    need be)."""
    if os.path.isdir(path) or path.endswith(os.sep):
        raise CDLMError(f"{what} {path!r} names a directory: give a file name")
    if os.path.exists(path) and not os.path.isfile(path):  # a FIFO, a device: reading its kind would block
        raise CDLMError(f"{what} {path!r} is not a regular file: give a file name")
    if os.path.islink(path) and not os.path.exists(path):  # replacing it would replace the link, not its target
        raise CDLMError(f"{what} {path!r} is a symbolic link to {os.readlink(path)!r}, which does not exist: give a "
                        f"file name, or a link to a file")
    if os.path.lexists(path) and not os.access(path, os.W_OK):
        raise CDLMError(f"{what} {path!r} is write-protected: this run would replace it; make it writable or "
                        f"write elsewhere")
    check_writable(os.path.dirname(os.path.abspath(path)), what, shown=path)


def option_paths(d):
    """{option: path, or a list of paths} as [(option, path)]; None is skipped."""
    return [(k, p) for k, v in d.items() for p in (v if isinstance(v, (list, tuple)) else [v]) if p]


def refuse_overlap(outputs, inputs):
    """
    No output may be, contain or sit inside an input of the same run: the run would write over
    what it reads. outputs and inputs are {option: path, or a list of paths}; None is skipped. An
    input whose key has a space is named by it as written (an input no option names: "the data of
    option teacher_dir's checkpoint"). Real paths, so a symlink or a trailing slash hides nothing.
    """
    for o, out in option_paths(outputs):
        for i, inp in option_paths(inputs):
            a, b = os.path.realpath(out), os.path.realpath(inp)
            where = ("is the same path as" if a == b else "is inside" if os.path.commonpath([a, b]) == b else
                     "contains" if os.path.commonpath([a, b]) == a else None)
            if where:
                named = f"{i} {inp!r}" if " " in i else f"option {i}={inp!r}"
                raise CDLMError(f"option {o}={out!r} {where} {named}, which this run reads: it would "
                                f"be written over; give another {o}")


class Output(NamedTuple):
    """A kind of file a script writes: its suffix, what it is (for a message), and ours(path), whether
    an existing file is one of that kind (a bench report by its fields, a replay page by its marker)."""
    suffix: str
    kind: str
    ours: Callable


def check_output(path, what, kind):
    """
    A file output may be new, or an existing file of the kind the script writes there (an Output),
    which it replaces; anything else (a README, a dataset's meta.json or split, a manifest) is
    refused, as is a name without the kind's suffix, before any work.
    """
    if not path.endswith(kind.suffix):
        raise CDLMError(f"{what}={path!r}: expected a file name ending in {kind.suffix}")
    if os.path.lexists(path) and not kind.ours(path):
        raise CDLMError(f"{what}={path!r} is an existing file that is not {kind.kind}: it would be written over; "
                        f"give a new file name, or remove that file")


def file_head(path, n=65536):
    """The first n bytes of a file (b'' when it cannot be read): what a kind of output is told by."""
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def holds(d):
    """Which of this repo's outputs folder d holds ('a trajectory set', 'a prepared dataset', 'a
    checkpoint', 'reference checkpoints', 'results files'), or None: a trajectory set's commit record
    and a dataset's meta.json share a name; results are told by demo.py's layout (seed<N>.json,
    ablation/, frontier/)."""
    try:
        with open(os.path.join(d, "meta.json")) as f:
            record = json.load(f)
    except (OSError, ValueError):
        record = None
    if isinstance(record, dict) and ("set" in record or "splits" in record):
        return "a trajectory set" if "set" in record else "a prepared dataset"
    if os.path.isfile(os.path.join(d, "ckpt.pt")):
        return "a checkpoint"
    if os.path.isfile(os.path.join(d, "MANIFEST.json")):  # demo.py --stage=export's bundle of a task's roles
        return "reference checkpoints"
    names = os.listdir(d) if os.path.isdir(d) else []
    if any(re.fullmatch(r"seed[0-9]+\.json", n) for n in names) or {"ablation", "frontier"} & set(names):
        return "results files"
    return None


def refuse_inside(path, what, kind="it"):
    """No output inside a dataset or a trajectory set (their writers own every file there: a picture
    among a set's fields, or beside a dataset's splits, would block their repair)."""
    up = os.path.dirname(os.path.realpath(path))
    while up != os.path.dirname(up):
        have = holds(up)
        if have in ("a trajectory set", "a prepared dataset"):
            raise CDLMError(f"{what}={path!r} is inside {up}, which holds {have}: write {kind} elsewhere")
        up = os.path.dirname(up)


@contextmanager
def holding(outputs):
    """Every file output of a run, [(path, what, Output)], checked (check_output) and locked (lock)
    for the run, before any work: a second writer of any of them is refused."""
    seen = {}
    for path, what, _ in outputs:  # one run writing one file twice: the second would replace the first
        if os.path.realpath(path) in seen:
            raise CDLMError(f"{what} {path!r} is the file of {seen[os.path.realpath(path)]} too: give each its own")
        seen[os.path.realpath(path)] = what
        refuse_inside(path, what)
    with ExitStack() as stack:
        for path, what, kind in outputs:
            stack.enter_context(lock(path, what, file=True, kind=kind))
        yield


@contextmanager
def lock(path, what, file=False, kind=None):
    """
    One writer per output (a directory, or with file=True a file), held for the run through
    .{name}.lock beside it; with kind (an Output), the file there must be of that kind
    (check_output), checked under the lock. A second writer is refused in one line naming the
    holder. flock is released by the kernel when its process ends, however it ends, so a
    killed run never blocks a rerun. A run that fails before writing anything leaves neither the
    folder it made nor its lock file. Under torchrun only rank 0 writes files, so only rank 0 locks.
    """
    if int(os.environ.get("RANK", 0)) != 0:
        yield
        return
    import fcntl
    made = not os.path.lexists(path) or os.path.realpath(path) in MADE  # by this run
    (check_file_writable if file else check_writable)(path, what)
    if kind is not None:  # a name refused leaves no lock file behind; checked again under the lock
        check_output(path, what, kind)
    where = lock_path(path)
    made_lock = not os.path.lexists(where)
    try:
        fd = os.open(where, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise CDLMError(f"{what} {path!r}: its lock {where} cannot be made ({e.strerror or e}): write where the "
                        f"parent directory is writable") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:  # held shared: only runs that read it (files.reading)
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                raise CDLMError(f"{what} {path!r} is being read by a running run: wait for it to end, or write "
                                f"elsewhere") from None
            except BlockingIOError:
                pass
            raise CDLMError(f"{what} {path!r} is being written by another run ({holder(fd)}): wait for it to "
                            f"end, or write elsewhere") from None
        try:  # who holds it, for the message above; plain writes (a full disk only loses the note)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                         f"{' '.join(sys.argv)}".encode())
        except OSError:
            pass
        if kind is not None:
            check_output(path, what, kind)
        try:
            yield
        except BaseException:  # refused or failed: what this run made and left empty goes (we hold the lock)
            if made:
                if os.path.isdir(path) and not os.listdir(path):
                    os.rmdir(path)
                if made_lock and not os.path.lexists(path):
                    os.remove(where)
                up = os.path.dirname(os.path.realpath(path))
                while up in MADE and os.path.isdir(up) and not os.listdir(up):  # and the empty folders above it
                    os.rmdir(up)
                    up = os.path.dirname(up)
            raise
    finally:
        os.close(fd)


def lock_path(path):
    """The lock file of an output or input: .{name}.lock beside it, one whichever way the path is written."""
    real = os.path.realpath(path)
    return os.path.join(os.path.dirname(real), f".{os.path.basename(real)}.lock")


def holder(fd):
    """Who holds a lock: the line its writer left in the lock file."""
    return " ".join(os.pread(fd, 2000, 0).decode(errors="replace").split()) or "starting up"


@contextmanager
def reading(inputs):
    """The folders a run reads, {option: path, or a list of paths} as refuse_overlap takes them, held
    shared for the run through the lock their writers take (lock): prepare.py, collect.py or train.py
    writing into one of them is refused until the run ends, and a folder being written now is refused
    here. A folder whose lock cannot be made (a read-only parent) cannot be rewritten either, and is
    read without one."""
    if int(os.environ.get("RANK", 0)) != 0:
        yield
        return
    import fcntl
    with ExitStack() as stack:
        for key, path in option_paths(inputs):
            if not os.path.lexists(path):  # nothing there to rewrite: the run says so itself, no lock file left
                continue
            where = lock_path(path)
            try:
                fd = os.open(where, os.O_RDWR | os.O_CREAT, 0o644) if os.access(os.path.dirname(where), os.W_OK) \
                    else os.open(where, os.O_RDONLY)
            except OSError:
                continue
            stack.callback(os.close, fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                named = key if " " in key else f"option {key}"  # as refuse_overlap names an input
                raise CDLMError(f"{named} {path!r} is being written by another run ({holder(fd)}): wait for it "
                                f"to end") from None
        yield
