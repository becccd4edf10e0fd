# The masked-diffusion teacher on arithmetic: about 12 minutes on a 2-core CPU (RESULTS.md).
mode = "dlm"
out_dir = "out/teacher"
data_dir = "data/arithmetic"
n_layer = 4
n_head = 4
n_embd = 128
block_size = 8
batch_size = 64
max_iters = 2000
learning_rate = 1e-3
