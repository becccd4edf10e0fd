# The autoregressive baseline: same model and data, causal mask, next-token loss.
mode = "ar"
out_dir = "out/ar"
data_dir = "data/arithmetic"
max_iters = 2000
learning_rate = 1e-3
