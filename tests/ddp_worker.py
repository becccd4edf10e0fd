"""
One rank of the DDP test (tests/test_ddp.py launches it with torchrun, 2 processes, gloo):
teacher (dlm), trajectory collection, student (cdlm) and AR baseline, each for a few steps.

    torchrun --standalone --nproc_per_node=2 tests/ddp_worker.py DATA_DIR OUT_ROOT CHECK_DIR

Every file a rank opens for writing, renames into place or creates under OUT_ROOT is recorded
through a Python audit hook, and each rank saves its final weights of every stage in CHECK_DIR, so
the test can check that rank 0 alone writes and that the ranks agree.
"""
import json
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from collect import collect  # noqa: E402
from train import train  # noqa: E402

data_dir, out_root, check_dir = (os.path.abspath(a) for a in sys.argv[1:4])
writes = []


def audit(event, args):
    path = None
    if event == "open" and args[0] is not None and not isinstance(args[0], int):
        mode, flags = args[1], args[2]
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else \
            bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        path = args[0] if writing else None
    elif event in ("os.rename", "os.replace"):
        path = args[1]
    elif event == "os.mkdir":
        path = args[0]
    if path is not None and os.path.abspath(os.fsdecode(path)).startswith(out_root):
        writes.append(os.path.relpath(os.fsdecode(path), out_root))


torch.set_num_threads(1)
dist.init_process_group("gloo")
rank = dist.get_rank()
sys.addaudithook(audit)

tiny = dict(n_layer=2, n_head=2, n_embd=32, batch_size=8, max_iters=6, eval_interval=100, eval_iters=1,
            warmup_iters=2, device="cpu", data_dir=data_dir)
out = {k: os.path.join(out_root, k) for k in ("teacher", "traj", "student", "ar")}
models = {}
models["teacher"] = train({**tiny, "mode": "dlm", "out_dir": out["teacher"]})
collect({"teacher_dir": out["teacher"], "out_dir": out["traj"], "n_examples": 44, "batch_size": 8, "chunk": 24,
         "device": "cpu"})
models["student"] = train({**tiny, "mode": "cdlm", "init_from": "teacher", "out_dir": out["student"],
                           "teacher_dir": out["teacher"], "traj_dirs": [out["traj"]]})
models["ar"] = train({**tiny, "mode": "ar", "out_dir": out["ar"]})

dist.barrier()
os.makedirs(check_dir, exist_ok=True)  # outside OUT_ROOT: not counted as a write
with open(os.path.join(check_dir, f"writes_rank{rank}.json"), "w") as f:
    json.dump(sorted(set(writes)), f)
for name, model in models.items():
    torch.save(model.state_dict(), os.path.join(check_dir, f"{name}_rank{rank}.pt"))
dist.destroy_process_group()
