# Every decoding method on CUDA (bench.py synchronizes the GPU before reading the clock).
teacher_dir = "out/cuda_teacher"
student_dir = "out/cuda_student"
ar_dir = "out/cuda_ar"
out_path = "out/cuda_bench.json"
num_eval = 1000
batch_size = 256
device = "cuda"
dtype = "auto"
