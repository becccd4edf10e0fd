# Teacher trajectories on the word problems: one token per step, N = gen_len steps.
teacher_dir = "out/wp_teacher"
out_dir = "out/wp_trajectories"
n_examples = 8192
batch_size = 128
