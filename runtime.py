"""
Runtime plumbing shared by every script (nanochat's common module): device, precision, DDP set-up
and collectives, clocks, random states, memory, the machine and the compiler. The files a run
writes and reads are files.py's. No script imports these from another script.
"""
import os
import re
import types
import weakref
from contextlib import contextmanager, nullcontext
from typing import NamedTuple

import torch

from configurator import CDLMError, Int

DTYPES = ("float32", "bfloat16", "float16")
# The training stages' option: a float sum split over another number of threads adds in another order,
# so on a CPU the thread count is part of a run's identity, like its seed (see cpu_threads)
DEVICE = r"cpu|mps|cuda(:\d+)?"  # the devices a run can be given (--device, and what a bench report names)
THREADS = Int(1, "[1, 1024]")


def pick_device(device):
    """'auto' is the best device present; an explicit one must exist, or a one-line error says so."""
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if not re.fullmatch(DEVICE, device):
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


_compiled_steps = weakref.WeakKeyDictionary()  # compiled model -> {kind of decode: its compiled step}


def compiled_step(model, step_fn, kind):
    """
    step_fn(plain model, *args) under torch.compile for a compiled model, made once per model and
    kind of decode. torch.compile keeps a code object's graphs in one list and checks their guards
    in turn at every call: each model and kind gets a copy of the function with a code object of
    its own, so a decode checks its own few graphs, not those of every method benched before it.
    On CUDA the step's sequences and passes (x, nfe), which the sampler keeps across steps, are
    copied out: CUDA graphs reuse their outputs' memory at the next replay (gpt-fast copies too).
    """
    steps = _compiled_steps.setdefault(model, {})
    if kind not in steps:
        plain = model._orig_mod

        def step(*args):
            return step_fn(plain, *args)
        name = f"{step_fn.__name__}_{id(model):x}_" + "_".join(map(str, kind))
        code = step.__code__.replace(co_name=name, co_qualname=name)
        fn = compile_function(types.FunctionType(code, step.__globals__, name, None, step.__closure__), plain)
        if next(plain.parameters()).device.type == "cuda":
            graphed = fn

            def fn(*args):
                o = graphed(*args)
                return o._replace(x=o.x.clone(), nfe=o.nfe.clone())
        steps[kind] = fn
    return steps[kind]
