# The CDLM student on the word problems: the teacher's weights under a block-causal mask.
mode = "cdlm"
out_dir = "out/wp_student"
data_dir = "data/wordproblems"
init_from = "teacher"
teacher_dir = "out/wp_teacher"
traj_dirs = ["out/wp_trajectories"]
block_size = 16
w_distill = 1.0
w_consist = 0.5
w_dlm = 0.1
dlm_rows = 8            # the DLM loss on 8 of the 64 rows: the step costs 0.54 s instead of 0.87 here
threshold = 0.99
batch_size = 64
max_iters = 2000
learning_rate = 3e-4
min_lr = 3e-5
warmup_iters = 50
