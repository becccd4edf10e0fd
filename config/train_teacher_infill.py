# The infilling teacher (README, section 5): the default teacher's preset with the prompt noised too,
# in every row at the answer's ratio t (train.py's noise_sequences). Stacked on it:
# python train.py config/train_teacher.py config/train_teacher_infill.py
out_dir = "out/teacher_infill"
prompt_noise = 1.0
