# Teacher trajectories for the CDLM student: one token per step, N = gen_len steps.
teacher_dir = "out/teacher"
out_dir = "out/trajectories"
n_examples = 6144
batch_size = 128
