# A teacher that also learns to fill holes in the prompt (README, section 5): the default teacher,
# with the prompt noised too in every row, at the answer's ratio t (train.py's noise_sequences).
# python train.py config/train_teacher_infill.py; python show.py --view=infill --teacher_dir=out/teacher_infill
mode = "dlm"
out_dir = "out/teacher_infill"
data_dir = "data/arithmetic"
n_layer = 4
n_head = 4
n_embd = 128
block_size = 8
batch_size = 64
max_iters = 2000
learning_rate = 1e-3
prompt_noise = 1.0
