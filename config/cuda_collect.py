# Teacher trajectories on CUDA (N = gen_len = 160 steps per problem). Several GPUs shard the prompts:
#   torchrun --standalone --nproc_per_node=8 collect.py config/cuda_collect.py
teacher_dir = "out/cuda_teacher"
out_dir = "out/cuda_trajectories"
n_examples = 50_000
batch_size = 512
chunk = 8192
device = "cuda"
dtype = "auto"
