"""
Every file read is the file it claims to be, down to its contents: a trajectory set's token ids,
steps and hidden states, a checkpoint's mode against its mask and its weights against its
model_config, a checkpoint's stored decoding settings named as its own, a results file's figures
against what they count. Each is one line naming the file, the field or the first bad row.
"""
import json
import os
import re
import shutil

import numpy as np
import pytest
from conftest import ROOT
from test_hostile import collect_into, refused
from test_hostile_inputs import copy_checkpoint

import collect
import sample
import show
import train
from configurator import CDLMError
from data.trajectories import Writer, field_specs, load_trajectories, load_trajectory_sets, set_name

# -----------------------------------------------------------------------------
# trajectory sets: ids inside the vocabulary, the steps of one token a step, finite hidden states

N, P, L, BS, C, V = 6, 5, 8, 4, 3, 12


def write_set(out, edit=None, seed=0):
    """A small trajectory set written by the repo's own Writer and committed as collect.py commits it:
    rows whose steps finalize one position a step, block by block (another seed: another set)."""
    specs = field_specs(dict(dtype="uint8", prompt_len=P, gen_len=L), N, C, "float16")
    settings = dict(teacher_hash="0" * 16, data="1" * 16, n_examples=N, seed=seed)
    rng = np.random.default_rng(0)
    arrays = dict(prompt=rng.integers(3, V, (N, P)), tokens=rng.integers(3, V, (N, L)), truth=rng.integers(3, V, (N, L)),
                  step=np.stack([np.concatenate([b * BS + rng.permutation(BS) for b in range(L // BS)]) for _ in range(N)]),
                  hidden=rng.standard_normal((N, L, C)))
    if edit:
        edit(arrays)
    w = Writer(str(out), specs, settings)
    w.resume()
    w.write(range(N), arrays)
    w.checkpoint(N, N)
    w.commit(set_name(settings), dict(settings=settings, n=N, gen_len=L, block_size=BS, prompt_len=P, vocab_size=V, n_embd=C,
                        fields={k: [list(s), d] for k, (s, d) in specs.items()}))
    return str(out)


def put(field, value, row=None, pos=None):
    def edit(a):
        a[field] = a[field].astype(np.float64 if field == "hidden" else np.int64)
        if row is None:
            a[field][...] = value
        else:
            a[field][row, pos] = value
    return edit


def twice(a):  # row 2 finalizes position 1 at position 0's step: one step finalizes two, another none
    a["step"][2, 1] = a["step"][2, 0]


@pytest.mark.parametrize("edit, words", [
    (put("tokens", 200, 3, 2), ["tokens.bin: row 3, position 2 holds token id 200", "vocabulary of 12"]),  # probe 240
    (put("tokens", 200), ["tokens.bin: row 0, position 0 holds token id 200"]),                            # 241, 257
    (put("truth", 200), ["truth.bin: row 0, position 0 holds token id 200"]),                              # 242
    (put("prompt", 200), ["prompt.bin: row 0, position 0 holds token id 200"]),                            # 243
    (put("truth", 250, 5, 7), ["truth.bin: row 5, position 7 holds token id 250"]),                        # 244
    (put("step", 999), ["step.bin: row 0, position 0 holds step 999", "its block's steps 0..3"]),          # 245, 256
    (put("step", -1), ["step.bin: row 0, position 0 holds step -1"]),                                      # 246
    (put("step", 2, 1, 6), ["step.bin: row 1, position 6 holds step 2", "its block's steps 4..7"]),
    (twice, ["step.bin: row 2 finalizes 2 positions at step", "and none at step", "one a step"]),
    (put("hidden", np.nan), ["hidden.bin: row 0, position 0", "not finite"]),                              # 247, 261
    (put("hidden", np.inf, 4, 5), ["hidden.bin: row 4, position 5", "not finite"]),
])
def test_a_damaged_trajectory_set_is_refused_naming_its_first_bad_row(tmp_path, edit, words):
    load_trajectories(write_set(tmp_path / "good"))  # the writer's own set opens
    with pytest.raises(CDLMError) as e:
        load_trajectories(write_set(tmp_path / "bad", edit))
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words) and "run collect.py again" in msg, msg
    assert str(tmp_path / "bad") in msg


def test_a_trajectory_set_given_twice_is_refused(tmp_path):
    a = write_set(tmp_path / "a")
    os.symlink(a, tmp_path / "link")
    shutil.copytree(a, tmp_path / "copy")
    load = lambda *dirs: load_trajectory_sets(list(dirs), None, L, BS)
    assert load(a).n == N and load(a, write_set(tmp_path / "b", seed=1)).n == 2 * N
    for again in (a, a + "/", str(tmp_path / "link"), str(tmp_path / ".." / tmp_path.name / "a")):
        with pytest.raises(CDLMError, match=f"option traj_dirs: '{again}' is '{a}' again"):
            load(a, again)
    with pytest.raises(CDLMError, match=f"'{tmp_path / 'copy'}' holds the same set \\(set-[0-9a-f]{{12}}\\) as '{a}'"):
        load(a, str(tmp_path / "copy"))


def damaged_copy(src, dst, field, value):
    shutil.copytree(src, dst)
    _, meta = load_trajectories(str(dst))
    f = dst / meta["set"] / f"{field}.bin"
    a = np.fromfile(f, dtype=meta["fields"][field][1])
    a[...] = value
    a.tofile(f)
    return dst


@pytest.mark.parametrize("field, value, words", [("tokens", 200, ["tokens.bin: row 0", "token id 200"]),
                                                 ("step", 999, ["step.bin: row 0", "step 999"]),
                                                 ("hidden", np.nan, ["hidden.bin: row 0", "not finite"])])
def test_train_and_show_refuse_a_damaged_set_before_work(tmp_path, data_dir, teacher_dir, student_dir, traj_dir,
                                                        field, value, words):
    bad = damaged_copy(traj_dir, tmp_path / "bad", field, value)
    refused(train.main, [f"--data_dir={data_dir}", f"--out_dir={tmp_path / 's'}", "--mode=cdlm", "--init_from=teacher",
                         f"--teacher_dir={teacher_dir}", f"--traj_dirs={bad}", "--device=cpu"], *words)
    for view, extra in (("states", []), ("losses", [f"--teacher_dir={teacher_dir}"])):
        refused(show.main, [f"--view={view}", f"--student_dir={student_dir}", f"--traj_dir={bad}", *extra], *words)


def test_train_refuses_a_set_given_twice(tmp_path, data_dir, teacher_dir, traj_dir):
    refused(train.main, [f"--data_dir={data_dir}", f"--out_dir={tmp_path / 's'}", "--mode=cdlm", "--init_from=teacher",
                         f"--teacher_dir={teacher_dir}", f"--traj_dirs={traj_dir},{traj_dir}/", "--device=cpu"],
            "option traj_dirs", f"'{traj_dir}/' is '{traj_dir}' again")


def test_train_refuses_two_sets_of_the_same_first_problems(tmp_path, data_dir, teacher_dir, traj_dir):
    """collect.py decodes the first n_examples problems: a greedy set of 16 from the same teacher is
    the first 16 of the 48-problem set (the same trajectories); one sampled at T=0.5 is other draws."""
    collect_into(tmp_path / "few", teacher_dir, n_examples=16)
    assert load_trajectories(str(tmp_path / "few"))[0]["tokens"].tolist() == load_trajectories(traj_dir)[0]["tokens"][:16].tolist()
    args = [f"--data_dir={data_dir}", f"--out_dir={tmp_path / 's'}", "--mode=cdlm", "--init_from=teacher",
            f"--teacher_dir={teacher_dir}", "--device=cpu"]
    refused(train.main, args + [f"--traj_dirs={traj_dir},{tmp_path / 'few'}"], "option traj_dirs",
            "the same first 16 problems", "count twice")
    collect_into(tmp_path / "sampled", teacher_dir, n_examples=16, temperature=0.5)
    meta = load_trajectories(traj_dir)[1]
    sets = load_trajectory_sets([traj_dir, str(tmp_path / "sampled")], meta["settings"]["teacher_hash"],
                                meta["gen_len"], meta["block_size"])
    assert sets.n == 48 + 16


def test_a_set_with_damaged_contents_is_collected_again_by_the_rerun(tmp_path, teacher_dir, traj_dir, capsys):
    want, _ = load_trajectories(traj_dir)
    bad = damaged_copy(traj_dir, tmp_path / "bad", "step", 999)
    collect_into(bad, teacher_dir)  # the rerun the message names: not the damaged set committed again
    assert "damaged" in capsys.readouterr().out
    got, _ = load_trajectories(str(bad))
    for f in ("step", "tokens"):
        np.testing.assert_array_equal(got[f], want[f])


# -----------------------------------------------------------------------------
# checkpoints: the mode agrees with the mask, the weights with the model_config, and a stored
# decoding setting is named as the checkpoint's, not as an option nobody typed

@pytest.mark.parametrize("edit, words", [
    (lambda c: c["config"].update(mode="dlm"), ["mode='dlm' (the teacher)", "attn='block_causal'", "disagree"]),  # 220
    (lambda c: c["model_config"].update(attn="bidirectional"), ["mode='cdlm' (the student)", "attn='bidirectional'"]),
    (lambda c: c["model_config"].update(n_layer=3), ["does not match its model_config", "it has no blocks.2."]),  # 227
    (lambda c: c["model_config"].update(vocab_size=22), ["does not match", "lm_head.weight of shape [21, 32], where "
                                                                           "that model has [22, 32]"]),  # 228
    (lambda c: c["model_config"].update(seq_len=70), ["does not match", "wpe.weight of shape [69, 32]"]),  # 229
    (lambda c: c["model_config"].update(n_heads=2), ["its model_config builds no model", "n_heads"]),
])
def test_an_edited_checkpoint_is_refused_naming_it(tmp_path, student_dir, edit, words):
    bad = copy_checkpoint(student_dir, tmp_path / "bad", edit)
    refused(sample.main, [f"--out_dir={bad}", "--prompt=5:+3*7="], f"{bad}/ckpt.pt", *words)


def test_a_student_edited_into_a_teacher_is_no_teacher(tmp_path, data_dir, student_dir, teacher_dir):
    bad = copy_checkpoint(student_dir, tmp_path / "bad", lambda c: c["config"].update(mode="dlm"))
    refused(collect.main, [f"--teacher_dir={bad}", f"--out_dir={tmp_path / 't'}", "--device=cpu"],
            f"{bad}/ckpt.pt", "mode='dlm'", "attn='block_causal'")
    wide = copy_checkpoint(teacher_dir, tmp_path / "wide", lambda c: c["model_config"].update(n_embd=64))
    refused(train.main, [f"--data_dir={data_dir}", f"--out_dir={tmp_path / 's'}", "--mode=cdlm", "--init_from=teacher",
                         f"--teacher_dir={wide}", f"--traj_dirs={tmp_path / 'none'}", "--device=cpu"],
            f"{wide}/ckpt.pt", "does not match its model_config")


@pytest.mark.parametrize("stored, typed, words", [
    (dict(threshold=5.0), "--threshold=0.9", ["sampling.threshold=5.0", "expected float in (0, 1]"]),  # 223
    (dict(threshold="0.9"), "--threshold=0.9", ["sampling.threshold='0.9'", "expected float"]),       # 226
    (dict(cache="prefix"), "--cache=exact", ["sampling.cache='prefix'", "block_causal model's cache is exact"]),  # 224
    (dict(block_size=7), "--block_size=8", ["sampling.block_size=7", "divisor of gen_len=48"]),        # 225
])
def test_a_bad_stored_decoding_setting_names_its_checkpoint(tmp_path, student_dir, stored, typed, words):
    bad = copy_checkpoint(student_dir, tmp_path / "bad", lambda c: c["sampling"].update(stored))
    msg = refused(sample.main, [f"--out_dir={bad}", "--prompt=5:+3*7="], f"{bad}/ckpt.pt: its stored setting", *words)
    assert "option" not in msg.replace(str(bad), ""), msg
    sample.main([f"--out_dir={bad}", "--prompt=5:+3*7=", typed])  # the option typed replaces the stored setting
    refused(sample.main, [f"--out_dir={student_dir}", "--prompt=5:+3*7=", "--cache=prefix"], "option cache='prefix'")


# -----------------------------------------------------------------------------
# results files: figures that cannot have been measured are refused, naming the file and field

def test_a_results_file_with_impossible_figures_is_refused(tmp_path):
    import demo
    import results
    res, here = tmp_path / "results", tmp_path / "results" / "arithmetic"
    shutil.copytree(os.path.join(ROOT, "results/arithmetic"), here)
    good = results.report("arithmetic", str(res), demo.ABLATIONS)
    seed2, abl = here / "seed2.json", here / "ablation" / "default_seed2.json"

    def edited(path, change, *words):
        before = path.read_bytes()
        d = json.loads(before)
        change(d)
        path.write_text(json.dumps(d))
        refused(demo.main, ["--report", f"--results_dir={res}"], path.name, *words)
        path.write_bytes(before)
    edited(seed2, lambda d: d["bench"]["cdlm"].update(nfe=0), "field bench.cdlm.nfe", "[1, inf)", "got 0")  # probe 417
    edited(seed2, lambda d: d["teacher_steps"]["1"].update(nfe=-1.0), "teacher_steps.1.nfe")
    edited(abl, lambda d: d.update(nfe=0.5), "field nfe", "got 0.5")
    steps = lambda d: d.update(teacher_steps={("3" if k == "2" else k): v for k, v in d["teacher_steps"].items()})
    edited(seed2, steps, "field teacher_steps has rows ['1', '3', '4', '8']", "a block of 8: ['1', '2', '4', '8']")  # 423
    edited(here / "seed3.json", lambda d: d["teacher_steps"].pop("8"), "seed3.json: field teacher_steps has rows "
           "['1', '2', '4']", "seed1337.json has ['1', '2', '4', '8']")
    edited(seed2, lambda d: d["bench"]["cdlm"].update(final_acc=0.99), "bench.cdlm.whole_acc=0.998 is above "
           "bench.cdlm.final_acc")  # 432
    edited(seed2, lambda d: d["teacher_steps"]["8"].update(whole_acc=1.0), "teacher_steps.8.whole_acc=1.0 is above")
    edited(abl, lambda d: d.update(whole_acc=1.0), "field whole_acc=1.0 is above final_acc")
    assert results.report("arithmetic", str(res), demo.ABLATIONS) == good
    for where, words in ((tmp_path / "nowhere", "does not exist"), (seed2, "is a file, not a directory")):  # 449, 450
        refused(demo.main, ["--report", f"--results_dir={where}"], f"option results_dir='{where}' {words}")
    (tmp_path / "empty").mkdir()  # a folder without this task's files is a report of none yet
    assert "arithmetic: no seed files" in results.report("arithmetic", str(tmp_path / "empty"))
    shutil.rmtree(here)  # the seed files gone, the ablation kept: its table, and a note that the headline is missing
    shutil.copytree(os.path.join(ROOT, "results/arithmetic/ablation"), here / "ablation")
    text = results.report("arithmetic", str(res), demo.ABLATIONS)
    assert text.startswith("arithmetic: no seed files (seed<N>.json)") and "ablation: students of" in text


@pytest.mark.parametrize("edit, words", [
    (lambda m: m["settings"].update(world="x"), "field settings is not the one its set"),  # its name is their hash
    (lambda m: m["settings"].update(seed=2), "field settings is not the one its set"),  # a valid value, edited
    (lambda m: m.update(teacher_final_acc=1.7), "field teacher_final_acc is wrong (1.7)"),
    (lambda m: m.update(bytes_per_example="big"), "field bytes_per_example is 'big', but its fields take")])
def test_an_edited_commit_record_is_refused_naming_the_field(tmp_path, edit, words):
    d = write_set(tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    edit(meta)
    (tmp_path / "s" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CDLMError, match=re.escape(words)):
        load_trajectories(d)


def test_a_commit_record_whose_sizes_and_shapes_disagree_names_both(tmp_path):
    """An edited n_embd (or a shape) in a set's meta.json: named as the disagreement it makes."""
    d = write_set(tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    (tmp_path / "s" / "meta.json").write_text(json.dumps({**meta, "n_embd": 64}))
    with pytest.raises(CDLMError, match=rf"field fields.hidden has shape \[{N}, {L}, {C}\], but .* give \[{N}, {L}, 64\]"):
        load_trajectories(d)


def test_a_checkpoint_folder_given_as_data_is_named_so(teacher_dir):
    """Not 'prepare the data into it', which prepare.py would refuse: the folder holds a checkpoint."""
    refused(train.main, [f"--data_dir={teacher_dir}", "--max_iters=1", "--device=cpu"], teacher_dir,
            "holds a checkpoint (ckpt.pt), not prepared data")
