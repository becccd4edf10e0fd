# The autoregressive baseline on CUDA, same size as the teacher.
mode = "ar"
out_dir = "out/cuda_ar"
data_dir = "data/wordproblems_long"
n_layer = 8
n_head = 8
n_embd = 512
batch_size = 128
max_iters = 5000
learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 200
eval_interval = 500
device = "cuda"
dtype = "auto"
compile = True
