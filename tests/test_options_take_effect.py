"""
An option typed takes effect or is refused, and a refusal names the real cause: sizes, options
without effect under another option's value, resumes, the odd checkpoint out, positions in a state.
"""
import sample
from test_hostile import refused


def test_sample_refuses_a_batch_above_the_problems_evaluated(teacher_dir):
    s = [f"--out_dir={teacher_dir}", "--eval", "--num_eval=2"]
    refused(sample.main, s + ["--batch_size=3"], "option batch_size=3", "more than the 2 problems evaluated")
    refused(sample.main, s + ["--threshold=0.5", "--threshold=0.9"], "option threshold is given twice")
