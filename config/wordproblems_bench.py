# Every decoding method on the word problems: python bench.py config/wordproblems_bench.py
teacher_dir = "out/wp_teacher"
student_dir = "out/wp_student"
ar_dir = "out/wp_ar"
out_path = "out/wp_bench.json"
