# Longer word problems for the CUDA presets: 8-16 events, values up to 999, gen_len in blocks of 32.
# python data/wordproblems/prepare.py config/cuda_data.py
out_dir = "data/wordproblems_long"
min_steps = 8
max_steps = 16
block_size = 32
n_train = 500_000
bpe_sample = 50_000
max_value = 999
