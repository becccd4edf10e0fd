# The CDLM student: the teacher's weights under a block-causal mask, trained on its trajectories.
mode = "cdlm"
out_dir = "out/student"
init_from = "teacher"
teacher_dir = "out/teacher"
traj_dirs = ["out/trajectories"]
block_size = 8          # must match the trajectories and inference
w_distill = 1.0
w_consist = 0.5
w_dlm = 0.1
threshold = 0.9
batch_size = 64
max_iters = 1500
lr_decay_iters = 2400  # 1500 of a 2400-iteration cosine: the frontier's point (results/arithmetic/frontier)
learning_rate = 3e-4
min_lr = 3e-5
warmup_iters = 50
