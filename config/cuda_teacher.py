# The teacher on one CUDA GPU: about 25M parameters, bf16 autocast, torch.compile, fused AdamW,
# TF32 (train.py turns these on for CUDA). Several GPUs:
#   torchrun --standalone --nproc_per_node=8 train.py config/cuda_teacher.py
mode = "dlm"
out_dir = "out/cuda_teacher"
data_dir = "data/wordproblems_long"
n_layer = 8
n_head = 8
n_embd = 512
block_size = 32
batch_size = 128
max_iters = 5000
learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 200
eval_interval = 500
device = "cuda"
dtype = "auto"
compile = True
