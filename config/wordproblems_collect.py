# Teacher trajectories on the word problems: one token per step, N = gen_len steps.
teacher_dir = "out/wp_teacher"
out_dir = "out/wp_trajectories"
n_examples = 7168
batch_size = 128
