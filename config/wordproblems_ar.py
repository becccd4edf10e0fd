# The autoregressive baseline on the word problems.
mode = "ar"
out_dir = "out/wp_ar"
data_dir = "data/wordproblems"
max_iters = 800
learning_rate = 1e-3
