"""A frozen teacher: a finished run of another method whose predictions a method distils from
(knowledge distillation, Hinton et al. 2015), e.g. RIDE's 6-expert model teaching a 3-expert one.

A method names its teacher with a `Teacher` (`Method.teacher`). The teacher is an ordinary
run: the launcher reuses it from the store or trains it first, once, under its own lock, as
it does a two-stage method's stage 1 (ltbench.runner.ensure_finished), and several students
share it. Unlike a stage 1, nothing of it trains on: the student starts from scratch and
reads only the teacher's logits, from its last epoch's weights (loaded weights-only), in
evaluation mode and without gradients.

The teacher's spec follows from the student's (`teacher_spec`): the same data, seed and
trainer settings, except where the two methods' protocols differ (RIDE's 20-epoch warm-up
for a distilled student, 5 for its teacher): there the teacher keeps its own value under the
student's preset wherever the student keeps its own. Where the student departs from its
preset (a --set, a tuning trial), the teacher follows in what a preset shapes (epochs,
backbone, batch size, images per class, warm-up) and in execution settings, and keeps its own
optimisation recipe. A custom student is compared with the preset it departs least from. The teacher's run id is part of
the student's spec (`teacher_run_id` among its hyperparameters), so a different teacher
makes a different run.
"""

from dataclasses import dataclass, field, replace
from typing import Callable

import torch
from torch import nn

from ltbench import registry
from ltbench.errors import UserError
from ltbench.presets import PRESETS, preset_values, protocol_base
from ltbench.settings import SETTINGS, SPEC_FIELDS, defaults
from ltbench.spec import RunSpec

TEACHER_RUN_ID = "teacher_run_id"  # the key under a student's own hyperparameters


@dataclass(frozen=True)
class Teacher:
    """What a method distils from: a run of the registered method `method`, whose
    hyperparameters are its defaults on the dataset updated by `hyperparameters(own)` (`own`:
    the student's own resolved hyperparameters), e.g. lambda own: {"num_experts": own["teacher_experts"]}."""

    method: str
    hyperparameters: Callable[[dict], dict] = field(default=lambda own: {})


def declared(method_name: str) -> Teacher | None:
    """The teacher `method_name` declares, checked: a registered one-stage method; None for none."""
    teacher = registry.method(method_name).teacher
    if teacher is None:
        return None
    if not isinstance(teacher, Teacher):
        raise TypeError(f"{method_name}.teacher must be a ltbench.teacher.Teacher, not {type(teacher).__name__}")
    cls = registry.method(teacher.method)  # an unknown name: a UserError naming the registered ones
    if cls.stage1 is not None:
        raise UserError(f"{method_name}: its teacher '{teacher.method}' is a two-stage method, and a teacher is "
                        "loaded as one run's backbone and heads", hint="declare a one-stage method as the teacher")
    return teacher


def teacher_spec(spec: RunSpec) -> RunSpec | None:
    """The spec of the run `spec` distils from (None where its method declares no teacher),
    labelled as `ltbench run` would label it."""
    from ltbench.sweep import TRAINER, preset_label, resolve  # sweep calls this from resolve

    teacher = declared(spec.method)
    if teacher is None:
        return None
    own = {**defaults(registry.method(spec.method).settings(registry.dataset(spec.dataset))),
           **{k: v for k, v in spec.own_hyperparameters.items() if k != TEACHER_RUN_ID}}
    hyperparameters = {(teacher.method, key): value for key, value in teacher.hyperparameters(own).items()}
    student = trainer_values(spec)
    # the preset the student departs least from (its own, unless it is custom)
    bases = {name: trainer_values(resolve(spec.method, spec.dataset, spec.imbalance_factor, spec.seed, name,
                                          with_teacher=False)) for name in PRESETS}
    preset = min(bases, key=lambda name: sum(student.get(key) != value for key, value in bases[name].items()))
    where = (spec.dataset, spec.imbalance_factor, spec.seed, preset)
    teacher_base = trainer_values(resolve(teacher.method, *where, hyperparameters, with_teacher=False))
    # The teacher keeps its own protocol where the student keeps its own, and follows the
    # student's departures in what a preset shapes (length, size, data: a shorter student
    # learns from a teacher as short) and in how the run is computed. Its optimisation
    # (lr, weight decay, schedule) stays its own recipe: a student tuned on its lr distils
    # from the one teacher, as a distillation recipe trains its teacher once.
    followed = shaped_by_presets(spec) | set(spec.execution)
    trainer = {(TRAINER, key): value if key in followed and value != bases[preset][key] else teacher_base[key]
               for key, value in student.items()}
    found = resolve(teacher.method, *where, {**trainer, **hyperparameters})
    return replace(found, preset=preset_label(found))


def shaped_by_presets(spec: RunSpec) -> set[str]:
    """The trainer settings some preset sets for `spec`'s method and dataset."""
    ds, cls = registry.dataset(spec.dataset), registry.method(spec.method)
    base = protocol_base(cls, ds)
    return set().union(*(preset_values(name, ds, base) for name in PRESETS))


def trainer_values(spec: RunSpec) -> dict:
    """Every trainer setting of `spec` (protocol, spec fields and execution) by name."""
    values = {**spec.params, **spec.execution, **{key: getattr(spec, key) for key in SPEC_FIELDS}}
    return {key: values[key] for key in SETTINGS if key in values}


def with_teacher_run_id(spec: RunSpec) -> RunSpec:
    """`spec` with its teacher's run id among its own hyperparameters (unchanged where its
    method declares no teacher)."""
    first = teacher_spec(spec)
    if first is None:
        return spec
    own = {**spec.own_hyperparameters, TEACHER_RUN_ID: first.run_id}
    return replace(spec, hyperparameters={**spec.hyperparameters, spec.method: own})


def check_recorded(spec: RunSpec, teacher: RunSpec) -> None:
    """The teacher run a spec was resolved with is the one its spec gives now."""
    recorded = spec.own_hyperparameters.get(TEACHER_RUN_ID)
    if recorded != teacher.run_id:
        raise UserError(
            f"{spec.label} ({spec.run_id}) names teacher run {recorded}, and its spec now gives teacher "
            f"{teacher.run_id} ({teacher.label}): was the teacher's method or one of its defaults changed since?",
            hint="run the sweep again (`ltbench run`), which resolves the student with today's teacher as a new run")


class FrozenTeacher(nn.Module):
    """A teacher run's backbone and heads, predicting without gradients and always in
    evaluation mode (its BatchNorm normalises with its running statistics, which never move).
    A student keeps it outside its own modules (`Method.load_teacher`), so the student's
    optimiser, checkpoints and device moves never include it."""

    def __init__(self, backbone: nn.Module, method: nn.Module, run_id: str):
        super().__init__()
        self.backbone, self.method, self.run_id = backbone, method, run_id
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True):
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.method.logits(self.backbone(images))


def load_teacher(spec: RunSpec, state: dict | None, data, device: torch.device,
                 channels_last: bool = False) -> FrozenTeacher:
    """The teacher run `spec`'s last-epoch weights (`state`, its checkpoint read weights-only)
    in a FrozenTeacher on `device`; a clear error where there are none or they do not fit the
    model its spec builds."""
    if state is None:
        raise UserError(f"teacher run {spec.run_id} ({spec.label}) has no checkpoint to load",
                        hint="move its folder out of the results dir, so the next run trains the teacher again")
    cls = registry.method(spec.method)
    backbone = cls.create_backbone(spec.backbone, data.in_chans, spec.hyperparameters)
    method = cls(spec.own_hyperparameters, data.class_counts, backbone.num_features)
    for part, module in (("backbone", backbone), ("method", method)):
        try:
            module.load_state_dict(state[part])
        except (KeyError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"teacher run {spec.run_id}: its checkpoint's {part} weights do not fit the "
                            f"{spec.method} model its spec builds ({spec.backbone}): {first}",
                            hint="its folder holds another model's checkpoint; move the folder away to train "
                            "the teacher again") from None
    frozen = FrozenTeacher(backbone, method, spec.run_id).to(device)
    if channels_last:
        frozen.backbone.to(memory_format=torch.channels_last)
    return frozen


def untrained_teacher(spec: RunSpec, data):
    """The teacher run of `spec` as initialised, standing in for the finished run (a
    stages.FinishedRun; None where its method declares no teacher): what benchmarks and
    checks of a step need, since a step costs the same whatever the teacher's weights."""
    from ltbench.stages import FinishedRun  # stages resolves its dependencies through this module

    first = teacher_spec(spec)
    if first is None:
        return None
    cls = registry.method(first.method)
    backbone = cls.create_backbone(first.backbone, data.in_chans, first.hyperparameters)
    method = cls(first.own_hyperparameters, data.class_counts, backbone.num_features)
    return FinishedRun(first, reused=False, result={},
                       state={"backbone": backbone.state_dict(), "method": method.state_dict()})


def teacher_of(method) -> FrozenTeacher:
    """The teacher loaded into a student (`Method.load_teacher`), or a clear error."""
    found = method.__dict__.get("teacher_model")
    if found is None:
        raise RuntimeError(f"{method.name} distils from a {method.teacher.method} teacher, and none was loaded: "
                           "build its trainer through ltbench.runner (make_trainer(..., teacher=...))")
    return found

