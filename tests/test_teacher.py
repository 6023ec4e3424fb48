"""A frozen teacher from another run (ltbench.teacher): trained once and shared by its students,
loaded weights-only, never trained, moved or checkpointed with a student; a plugin outside the
repository declares one; what is wrong with a teacher is said clearly."""

from dataclasses import replace

import pytest
import torch

from ltbench import registry, stages
from ltbench.cli import main
from ltbench.errors import UserError
from ltbench.launch.jobs import next_ready
from ltbench.launch.slurm import stage1_waits
from ltbench.runner import ensure_teacher, make_trainer
from ltbench.store import RunStore
from ltbench.sweep import resolve
from ltbench.teacher import TEACHER_RUN_ID, FrozenTeacher, load_teacher, teacher_of, teacher_spec
from ltbench.testing import CHECKS, toy_data, toy_spec, toy_trainer
from test_integrity import malicious_bytes
from test_plugins import installed_method

SMOKE = ["run", "--dataset", "fashion_mnist_lt", "--if", "100", "--preset", "smoke", "--device", "cpu", "--seeds", "0"]


def smoke_spec(method, **overrides):
    return resolve(method, "fashion_mnist_lt", 100, 0, "smoke", overrides)


def one_epoch_teacher(spec, data):
    states = []
    first = replace(teacher_spec(spec), epochs=1)
    make_trainer(first, data, torch.device("cpu"), save_checkpoint=states.append).fit()
    return stages.FinishedRun(first, reused=False, result={}, state=states[-1])


def test_a_student_epoch_leaves_its_teacher_as_it_was():
    """The teacher's weights and BatchNorm statistics after a student's training are those of
    its checkpoint; it stays in evaluation mode, outside the student's optimiser and state."""
    trainer = toy_trainer(toy_spec("ride_distill"), toy_data())
    teacher = teacher_of(trainer.method)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    assert any("running_mean" in k for k in before)
    assert not any(p.requires_grad for p in teacher.parameters())
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in teacher.parameters()}
    assert not any(k.startswith("teacher") for k in trainer.method.state_dict())

    trainer.fit()
    trainer.backbone.train()
    trainer.method.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert all(p.grad is None for p in teacher.parameters())
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), f"the teacher's {key} moved"


def test_the_teacher_predicts_as_its_finished_run_does():
    data = toy_data()
    finished = one_epoch_teacher(toy_spec("ride_distill"), data)
    frozen = load_teacher(finished.spec, finished.state, data, torch.device("cpu"))
    again = make_trainer(finished.spec, data, torch.device("cpu"))
    again.load_state_dict(finished.state)
    again.backbone.eval()
    again.method.eval()
    images = torch.randn(6, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(frozen(images), again.method.logits(again.backbone(images)))
    assert isinstance(frozen, FrozenTeacher) and frozen.run_id == finished.spec.run_id


def test_a_checkpoint_of_another_architecture_is_refused_clearly():
    data = toy_data()
    finished = one_epoch_teacher(toy_spec("ride_distill"), data)  # 6 experts
    four = replace(finished.spec, hyperparameters={"ride": {**finished.spec.own_hyperparameters, "num_experts": 4}})
    with pytest.raises(UserError, match=r"teacher run \w+: its checkpoint's backbone weights do not fit the ride "
                                        r"model its spec builds \(resnet8_cifar\)") as error:
        load_teacher(four, finished.state, data, torch.device("cpu"))
    assert "move the folder away" in error.value.hint
    with pytest.raises(UserError, match="has no checkpoint to load"):
        load_teacher(finished.spec, None, data, torch.device("cpu"))


def test_a_student_resolved_with_another_teacher_is_refused(tmp_path):
    student = smoke_spec("ride_distill")
    other = replace(student, hyperparameters={"ride_distill": {**student.own_hyperparameters, TEACHER_RUN_ID: "0123abcd4567"}})
    with pytest.raises(UserError, match=r"names teacher run 0123abcd4567, and its spec now gives teacher "
                                        + teacher_spec(student).run_id):
        ensure_teacher(other, tmp_path, "cpu")
    assert not (tmp_path / teacher_spec(student).run_id).exists()  # nothing trained


def test_a_distilling_job_waits_for_its_teacher_in_the_queue():
    student, teacher = smoke_spec("ride_distill"), teacher_spec(smoke_spec("ride_distill"))
    assert [s.run_id for s in stages.dependencies(student)] == [teacher.run_id]
    after = {student.run_id: {teacher.run_id}}
    queue = [(student, False), (teacher, False)]
    assert next_ready(queue, after, set()) == 1  # the teacher first
    assert next_ready([(student, False)], after, {teacher.run_id}) is None  # not while it trains
    assert next_ready([(student, False)], after, set()) == 0
    # a Slurm sweep submits the teacher first and the student's job after it
    assert stage1_waits([student, teacher], after, {}) == ([teacher], after)
    assert stage1_waits([student], after, {}) == ([student], {})  # a teacher done before trains nothing anew


@pytest.mark.slow
def test_one_teacher_is_trained_once_for_two_students_and_a_rerun_trains_nothing(tmp_path, fashion_mnist, capsys):
    results = tmp_path / "results"
    run = [*SMOKE, "--results-dir", str(results), "--methods", "ride_distill"]
    assert main(run) == 0
    assert main([*run, "--set", "ride_distill.distill_temperature=3"]) == 0
    store = RunStore(results)
    rows = {r["run_id"]: r for r in map(store.read_result, store.run_ids())}
    teacher = teacher_spec(smoke_spec("ride_distill"))
    students = [r for r in rows.values() if r["method"] == "ride_distill"]
    assert len(rows) == 3 and len(students) == 2 and rows[teacher.run_id]["method"] == "ride"
    assert all(r["status"] == "done" and r["teacher_run_id"] == teacher.run_id for r in rows.values()
               if r["method"] == "ride_distill")
    assert sorted(r["teacher_reused"] for r in students) == ["False", "True"]
    assert {float(r["teacher_wall_s"]) for r in students} == {float(rows[teacher.run_id]["wall_s"])}
    finished = rows[teacher.run_id]["finished_at"]
    capsys.readouterr()
    assert main(run) == 0
    said = capsys.readouterr().out
    assert "1 already done, 0 to run" in said and "training" not in said
    assert store.read_result(teacher.run_id)["finished_at"] == finished
    # `ltbench show` names the teacher a student read
    student = next(r for r in students if r["teacher_reused"] == "True")
    assert main(["show", student["run_id"], "--results-dir", str(results)]) == 0
    assert f"run {teacher.run_id} (reused;" in capsys.readouterr().out


@pytest.mark.slow
def test_a_planted_teacher_checkpoint_runs_no_code_and_stops_the_student(tmp_path, fashion_mnist):
    """The teacher's checkpoint is read weights-only: one that would run code is refused."""
    results, marker = tmp_path / "results", tmp_path / "marker"
    store, student = RunStore(results), smoke_spec("ride_distill")
    first = teacher_spec(student)
    store.write_spec(first)
    store.write_result({"run_id": first.run_id, "method": "ride", "status": "done", "top1": 50.0, "peak_mem_mb": 1})
    store.checkpoint_path(first.run_id).write_bytes(malicious_bytes("torch.save", marker))
    assert main([*SMOKE, "--results-dir", str(results), "--methods", "ride_distill"]) == 1
    assert not marker.exists(), "the planted teacher checkpoint ran code"
    row = store.read_result(student.run_id)
    assert row["status"] == "failed" and "not plain data" in row["error"]


# ---------------------------------------------------------------------- a plugin's teacher

DISTILL_MODULE = '''
import torch.nn.functional as F

from ltbench.method import LinearClassifierMethod
from ltbench.settings import Setting
from ltbench.teacher import Teacher, teacher_of


class DistilledCE(LinearClassifierMethod):
    """Cross-entropy plus a KL divergence from a CE teacher of the same spec (Hinton et al. 2015)."""

    name, display_name = "distilled_ce", "Distilled CE"
    teacher = Teacher("ce")
    hyperparameters = {"temperature": Setting(2.0, "T of the distillation", above=0, high=100,
                                              source="this plugin's own choice")}

    def loss(self, backbone, batches, progress):
        batch = batches["main"]
        images = batch.views[0]
        logits = self.logits(backbone(images)).float()
        t = self.hp["temperature"]
        target = F.softmax(teacher_of(self)(images).float() / t, dim=1)
        distill = F.kl_div(F.log_softmax(logits / t, dim=1), target, reduction="batchmean")
        return F.cross_entropy(logits, batch.labels) + t * t * distill
'''


@pytest.fixture
def distill_plugin(tmp_path, monkeypatch):
    with installed_method(tmp_path, monkeypatch, "my_distill_method", DISTILL_MODULE,
                          "distilled_ce = my_distill_method:DistilledCE"):
        yield


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_a_plugin_with_a_teacher_passes_the_conformance_checks(distill_plugin, check):
    check("distilled_ce")


def test_a_plugin_whose_teacher_is_not_registered_is_told_so(distill_plugin):
    cls = registry.method("distilled_ce")
    cls.teacher = replace(cls.teacher, method="c_e")
    with pytest.raises(UserError, match="unknown method 'c_e'. Did you mean 'ce'"):
        smoke_spec("distilled_ce")


@pytest.mark.slow
def test_a_plugin_distils_from_the_ce_run_of_its_sweep(distill_plugin, tmp_path, fashion_mnist, capsys):
    """Its teacher is the very CE run the sweep names: trained once, before the student."""
    results = tmp_path / "results"
    assert main([*SMOKE, "--results-dir", str(results), "--methods", "distilled_ce,ce"]) == 0
    said = capsys.readouterr().out
    store = RunStore(results)
    rows = {r["method"]: r for r in map(store.read_result, store.run_ids())}
    assert set(rows) == {"distilled_ce", "ce"} and rows["ce"]["run_id"] == smoke_spec("ce").run_id
    assert rows["distilled_ce"]["teacher_run_id"] == rows["ce"]["run_id"]
    assert rows["distilled_ce"]["teacher_reused"] == "False"
    assert "teacher: training ce" in said and "done meanwhile" in said
