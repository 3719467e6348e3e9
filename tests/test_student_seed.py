"""``student_seed``: the students' own seed. Null (the default) is ``seed``, so every existing
run keeps its numbers; set, it moves the students' streams (CE student, distilled students,
grid cells: initialisation, shuffling) and leaves the teacher's, the split's, the logits' and
the CAE's on ``seed``."""

from __future__ import annotations

import copy

import pytest
import torch

from kdlab import runtime
from kdlab.config import ConfigError, parse_config
from kdlab.reports import experiments

STUDENTS = {"train_student", "distill"}


def cfg_with(default_params, **values):
    raw = copy.deepcopy(default_params)
    raw.update(values)
    return parse_config(raw)


def test_null_is_seed_for_every_stream(default_params):
    cfg = cfg_with(default_params, seed=3)
    assert cfg.student_seed is None and cfg.students_seed == 3
    for stream, offset in runtime.SEED_STREAMS.items():
        assert runtime.stream_seed(cfg, stream) == 3 + offset  # as before the key existed


def test_student_seed_moves_the_students_streams_only(default_params):
    base = cfg_with(default_params, seed=3)
    cfg = cfg_with(default_params, seed=3, student_seed=7)
    assert cfg.students_seed == 7
    for stream, offset in runtime.SEED_STREAMS.items():
        want = (7 if stream in STUDENTS else 3) + offset
        assert runtime.stream_seed(cfg, stream) == want, stream
        same = runtime.stream_seed(base, stream) == runtime.stream_seed(cfg, stream)
        assert same == (stream not in STUDENTS), stream


def _draw(cfg, stream):
    runtime.start(cfg, stream)
    return torch.rand(4)


def test_started_streams_draw_from_their_seed(default_params):
    """What a stage draws after `start`: the teacher's numbers do not move with
    student_seed, a distilled student's do, and student_seed = seed is the null default."""
    raw = {**default_params, "device": "cpu"}
    null, same, other = (cfg_with(raw, student_seed=s) for s in (None, 0, 5))
    assert torch.equal(_draw(null, "train_teacher"), _draw(other, "train_teacher"))
    assert torch.equal(_draw(null, "teacher_logits"), _draw(other, "teacher_logits"))
    assert not torch.equal(_draw(null, "distill"), _draw(other, "distill"))
    assert torch.equal(_draw(null, "distill"), _draw(same, "distill"))
    assert torch.equal(_draw(null, "train_student"), _draw(same, "train_student"))


@pytest.mark.parametrize("bad", [-1, 1.5, "1", True, 2**31])
def test_bad_student_seed_names_key_and_allowed(default_params, bad):
    with pytest.raises(ConfigError, match=r"student_seed = .* allowed: null \(= seed\) \|"):
        cfg_with(default_params, student_seed=bad)


def test_fixed_teacher_tables_count_the_students_seed():
    spec = experiments.PAIRS["srrl_table11"]
    assert spec.fixed_teacher and not experiments.PAIRS["srrl_table6"].fixed_teacher
    flat = {"seed": 0, "student_seed": 2}
    assert experiments.run_seed(flat, spec, "kd") == 2
    assert experiments.run_seed(flat, spec, "teacher") == 0  # one teacher, its own seed
    assert experiments.run_seed({"seed": 4}, spec, "kd") == 4  # older runs: no key = seed
    assert experiments.run_seed(flat, experiments.PAIRS["srrl_table6"], "kd") == 0
