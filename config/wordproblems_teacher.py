# The masked-diffusion teacher on English word problems (python data/wordproblems/prepare.py first).
mode = "dlm"
out_dir = "out/wp_teacher"
data_dir = "data/wordproblems"
n_layer = 4
n_head = 4
n_embd = 128
block_size = 16
batch_size = 64
max_iters = 2000
learning_rate = 1e-3
eval_interval = 500
