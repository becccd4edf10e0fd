"""
Runtime plumbing shared by every script (nanochat's common module): device, precision, DDP set-up
and collectives, clocks, random states, output checks and the one-writer lock. No script imports
these from another script.
"""
import json
import os
import re
import socket
import sys
import time
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Callable, NamedTuple

import torch

from configurator import CDLMError, Int

DTYPES = ("float32", "bfloat16", "float16")
# The training stages' option: a float sum split over another number of threads adds in another order,
# so on a CPU the thread count is part of a run's identity, like its seed (see cpu_threads)
THREADS = Int(1, "[1, 1024]")


def pick_device(device):
    """'auto' is the best device present; an explicit one must exist, or a one-line error says so."""
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", device):
        raise CDLMError(f"option device={device!r}: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CDLMError(f"option device={device!r}: this torch ({torch.__version__}) sees no CUDA GPU; "
                            f"use --device=cpu")
        if ":" in device and int(device.split(":")[1]) >= torch.cuda.device_count():
            raise CDLMError(f"option device={device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CDLMError("option device='mps': no Apple GPU is available; use --device=cpu")
    return device


def pick_dtype(dtype, device):
    """'auto' is bfloat16 on a CUDA GPU that supports it natively (Ampere and later), else float32."""
    if dtype == "auto":
        cuda_bf16 = str(device).startswith("cuda") and torch.cuda.is_bf16_supported(including_emulation=False)
        return "bfloat16" if cuda_bf16 else "float32"
    if dtype not in DTYPES:
        raise CDLMError(f"option dtype={dtype!r}: expected 'auto' or one of {', '.join(DTYPES)}")
    return dtype


def autocast(device, dtype):
    """Mixed precision for forward passes (weights stay float32); a no-op context in float32."""
    if dtype == "float32":
        return nullcontext()
    return torch.autocast(device_type=str(device).split(":")[0], dtype=getattr(torch, dtype))


@contextmanager
def cpu_threads(n):
    """
    torch's CPU threads fixed at n for a training stage, whatever OMP_NUM_THREADS says, then
    restored (the timed stages keep the machine's count). The same run at 2 threads and at 1 is
    two runs: its matrix products reduce in another order, the weights drift apart by rounding,
    and after a few hundred steps the models differ as two seeds do.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sync(device):
    """Wait for queued GPU work: CUDA kernels run asynchronously, so a clock is read after this."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


class Runtime(NamedTuple):
    ddp: bool
    rank: int
    world: int
    device: str
    dtype: str
    ctx: object          # the autocast context for forward passes
    owns_group: bool     # we started the process group, so we end it

    @property
    def master(self):
        return self.rank == 0


def setup_runtime(cfg):
    """
    DDP (torchrun sets RANK), device, seed and autocast context; nanoGPT's recipe. A process
    group that the caller already started is used as it is (and left for the caller to end).
    """
    import torch.distributed as dist
    ddp = int(os.environ.get("RANK", -1)) != -1
    owns_group = ddp and not dist.is_initialized()
    device = pick_device(cfg["device"])
    dtype = pick_dtype(cfg["dtype"], device)
    rank, world = 0, 1
    if ddp:
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
            torch.cuda.set_device(device)
        if owns_group:
            dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(cfg["seed"] + rank)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 for the float32 matmuls left over
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(ddp, rank, world, device, dtype, autocast(device, dtype), owns_group)


def wrap_model(model, compile, rt):
    """The model as training steps call it: compiled (--compile), and DDP-wrapped under torchrun."""
    if compile:
        check_compiler(rt.device)
        model = torch.compile(model)
    if rt.ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP
        model = DDP(model, device_ids=[int(os.environ["LOCAL_RANK"])] if rt.device.startswith("cuda") else None)
    return model


def end_runtime(rt):
    """Every rank waits here until rank 0 has written its files; then the group we started ends."""
    if rt.ddp:
        import torch.distributed as dist
        dist.barrier()
        if rt.owns_group:
            dist.destroy_process_group()


def gather_rows(t, world):
    """Concatenate a same-shaped tensor from every rank along dim 0, in rank order."""
    if world == 1:
        return t
    import torch.distributed as dist
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def gather_objects(obj, world):
    """A small picklable object from every rank, as a list in rank order."""
    if world == 1:
        return [obj]
    import torch.distributed as dist
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj, ddp):
    """Rank 0's value of a small Python object, on every rank."""
    if not ddp:
        return obj
    import torch.distributed as dist
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# -----------------------------------------------------------------------------
# random states: everything a run draws from, so a resumed run continues exactly

def rng_state(np_rng, gen):
    """The numpy batch generator, the torch noise generator and torch's global state (dropout)."""
    state = dict(numpy=np_rng.bit_generator.state, torch=gen.get_state(), torch_global=torch.get_rng_state())
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state, np_rng, gen):
    np_rng.bit_generator.state = state["numpy"]
    gen.set_state(state["torch"])
    torch.set_rng_state(state["torch_global"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


MADE = set()  # the folders this process made (check_writable): a run that fails leaves them if empty


def check_writable(path, what, shown=None):
    """Make the directory path and prove a file can be written there, before any work is done; an
    error names `shown` (a file output's own path) or path. Under torchrun only rank 0 writes files,
    so only rank 0 checks."""
    if int(os.environ.get("RANK", 0)) != 0:
        return
    up = os.path.abspath(path)
    while not os.path.lexists(up):  # the nearest part of the path that exists must be a folder
        up = os.path.dirname(up)
    shown = shown or path
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
    checkpoint'), or None: a trajectory set's commit record and a dataset's meta.json share a name."""
    try:
        with open(os.path.join(d, "meta.json")) as f:
            record = json.load(f)
    except (OSError, ValueError):
        record = None
    if isinstance(record, dict) and ("set" in record or "splits" in record):
        return "a trajectory set" if "set" in record else "a prepared dataset"
    return "a checkpoint" if os.path.isfile(os.path.join(d, "ckpt.pt")) else None


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
            try:  # held shared: only runs that read it (runtime.reading)
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


def total_memory(device):
    """Bytes of memory on device (the GPU's, or this machine's RAM); None where unknown."""
    if str(device).startswith("cuda"):
        return torch.cuda.get_device_properties(torch.device(device)).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(device, what, mcfg, rows, train=False, extra_params=0):
    """
    Refuse at start-up sizes that cannot fit: a lower bound on the bytes of a model of ModelConfig
    mcfg and one forward pass over `rows` sequences in float32 (with train, also the gradients,
    AdamW's two moments and every layer's saved activations), against the device's whole memory.
    """
    n_layer, n_embd, n_head, vocab_size, seq_len = mcfg.n_layer, mcfg.n_embd, mcfg.n_head, mcfg.vocab_size, mcfg.seq_len
    params = n_layer * 12 * n_embd ** 2 + (vocab_size + seq_len) * n_embd + extra_params
    per_layer = rows * seq_len * (16 * n_embd + 2 * n_head * seq_len)
    need = 4 * (params * (4 if train else 1) + per_layer * (n_layer if train else 1) + 2 * rows * seq_len * vocab_size)
    have = total_memory(device)
    if have is not None and need > have:
        raise CDLMError(f"{what}: needs at least {need / 2 ** 30:,.1f} GiB, more than the {have / 2 ** 30:,.1f} GiB "
                        f"of {device}: lower them")



def machine_info():
    """What a timing or an accuracy was measured on: the CPU model, its vector instruction set as
    torch uses it (isa: AVX2, AVX512, ...: the kernels, and so the rounding, differ between them),
    cores, threads, torch, python."""
    import platform
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return dict(cpu=cpu, isa=torch.backends.cpu.get_cpu_capability(), cores=os.cpu_count(),
                threads=torch.get_num_threads(), torch=torch.__version__, python=platform.python_version())


def code_version(root=os.path.dirname(os.path.abspath(__file__))):
    """The git commit of this checkout, '+dirty' when tracked files differ from it; None outside git."""
    import subprocess
    try:
        run = lambda *a: subprocess.run(["git", "-C", root, *a], capture_output=True, text=True, check=True).stdout
        return run("rev-parse", "--short=12", "HEAD").strip() + ("+dirty" if run("status", "--porcelain", "-uno").strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def cpp_compiler():
    """The C++ compiler torch.compile uses on a CPU, found as Inductor finds it ($CXX, else g++), or None."""
    from torch._inductor.cpp_builder import get_cpp_compiler
    try:
        return get_cpp_compiler()
    except RuntimeError:  # Inductor's InvalidCxxCompiler
        return None


def check_compiler(device, what="option compile"):
    """
    torch.compile on a CPU writes C++ and builds it at the first call: without a compiler it would
    fail there, after the eager work, in an Inductor traceback; so it is refused before any work.
    On CUDA it writes Triton kernels, and Triton checks its own tools.
    """
    if torch.device(device).type == "cpu" and cpp_compiler() is None:
        raise CDLMError(f"{what}: torch.compile on a CPU builds C++ and finds no working C++ compiler "
                        "(g++, or the one $CXX names): install one, or run with compile off")


def compile_function(fn, model):
    """
    fn (which runs model) under torch.compile, in the mode for model's device: on CUDA
    'reduce-overhead' adds CUDA graphs (launch overhead dominates a model this small); on a CPU the
    C++ wrapper. Each kind of call (a block's first step, a later step) has fixed shapes apart
    from the batch, so a handful of graphs compile at the first calls and are reused after.
    """
    import torch._dynamo
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    if next(model.parameters()).device.type == "cuda":
        return torch.compile(fn, mode="reduce-overhead")
    # on a CPU the kernels are called from generated C++ instead of Python: a step of a small
    # model is some forty small kernels, and their Python calls were a third of its time
    return torch.compile(fn, options={"cpp_wrapper": True})


def compiled(model, on=True):
    """
    The model under torch.compile (compile_function), or the model itself (on=False). The sampler
    compiles its whole decoding step around such a model (sample.step_function). Compile time is
    spent at the first calls: time decoding after a warm-up (bench.py does).
    """
    if on:
        check_compiler(next(model.parameters()).device)
    return compile_function(model, model) if on else model


def is_compiled(model):
    """Whether model came from compiled(model): torch.compile's wrapper keeps the module as _orig_mod."""
    return hasattr(model, "_orig_mod")
