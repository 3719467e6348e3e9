"""The Distiller abstraction (in the manner of mdistiller).

A Distiller wraps the student and whatever knowledge source its method needs (teacher logits,
soft-label matrix). ``forward_train`` returns the student's logits and a dict of *weighted*
named loss terms; the training loop sums them and logs each one, and never needs to know the
method.
"""

from __future__ import annotations

import difflib
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.data.pipeline import Batch, resize
from kdlab.errors import ConfigError

# A method's numeric parameters: name -> (int or float, lowest allowed, highest or None).
# No defaults here: every parameter's default is its method's block of ``method_params`` in
# presets/default.yaml (tests/test_defaults.py checks that every key is there).
ParamSchema = dict[str, tuple[type, float, float | None]]
# String-valued method parameters: name -> allowed values.
ChoiceSchema = dict[str, tuple[str, ...]]


# Top-5 accuracy is reported where the papers print it: data sets with many classes
# (CIFAR-100, Tiny ImageNet); with 10 classes it is ~100% and only widens the tables.
TOP5_MIN_CLASSES = 10


class TeacherLogits:
    """Teacher outputs for a batch: looked up in a cache or computed by a live teacher."""

    def __init__(
        self,
        cached: torch.Tensor | None = None,
        model: nn.Module | None = None,
        input_size: int | None = None,
    ) -> None:
        if (cached is None) == (model is None):
            raise ValueError("give either cached logits or a live teacher model")
        self.cached = cached  # views x N x classes (view 0: as is, 1: flipped)
        self.model = model.eval() if model is not None else None
        self.input_size = input_size

    @property
    def live(self) -> bool:
        return self.model is not None

    @torch.no_grad()
    def __call__(self, batch: Batch) -> torch.Tensor:
        if self.cached is not None:
            view = batch.flipped.long()
            return self.cached[view, batch.index].to(batch.x.device)
        if batch.teacher_out is not None:  # computed once for every cell of a grid
            return batch.teacher_out["logits"]
        x = resize(batch.x, self.input_size) if self.input_size else batch.x
        return self.model(x)


class Distiller(nn.Module):
    """Base class: the CE-only student. Subclasses add their distillation terms.

    Args:
        student: the model being trained.
        params: this method's block of ``method_params`` (validated against ``schema``).
        alpha: weight of the distillation term; ``1 - alpha`` weighs cross-entropy.
        temperature: softening temperature of the distillation term.
        teacher: teacher outputs (methods with ``needs_teacher``).
        soft_labels: ``c x c`` soft-label matrix (methods with ``needs_soft_labels``).
    """

    name: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = False
    needs_soft_labels: ClassVar[bool] = False
    # Methods that tap the features of a live teacher model take the keyword arguments
    # ``teacher_model``, ``input_shape``, ``teacher_input_size``, ``num_data`` and
    # ``train_labels`` (see kdlab.methods.features.FeatureDistiller).
    needs_teacher_features: ClassVar[bool] = False
    schema: ClassVar[ParamSchema] = {}
    choices: ClassVar[ChoiceSchema] = {}
    description: ClassVar[str] = ""

    @classmethod
    def knowledge(cls) -> str:
        """What the method learns from besides labels: ``teacher``, ``soft_labels`` or ``labels``.

        It names the folder (kdlab.paths.KNOWLEDGE) its ``distill`` stage depends on.
        """
        if cls.needs_soft_labels:
            return "soft_labels"
        if cls.needs_teacher or cls.needs_teacher_features:
            return "teacher"
        return "labels"

    def __init__(
        self,
        student: nn.Module,
        params: dict[str, Any] | None = None,
        alpha: float = 0.0,
        temperature: float = 1.0,
        teacher: TeacherLogits | None = None,
        soft_labels: torch.Tensor | None = None,
        epochs: int = 1,
    ) -> None:
        super().__init__()
        self.student = student
        self.params = self.resolve_params(params or {})  # every key required
        self.alpha = alpha
        self.temperature = temperature
        self.epochs = epochs
        if self.needs_teacher and teacher is None:
            raise ValueError(f"method {self.name!r} needs a teacher")
        if self.needs_soft_labels and soft_labels is None:
            raise ValueError(f"method {self.name!r} needs the soft-label matrix")
        self.teacher = teacher if self.needs_teacher else None
        self.register_buffer("soft_labels", soft_labels if self.needs_soft_labels else None)

    @property
    def warmup_epochs(self) -> int:
        """Epochs before the method's terms are fully on (DKD's ramp, AB/FSP's initialisation);
        the chance-level divergence rule waits for them (:func:`kdlab.train.check_divergence`)."""
        return 0

    @property
    def term_temperature(self) -> float:
        """The temperature of the distillation term: the global ``temperature``, unless the
        method has its own (``method_params.dkd.temperature``)."""
        return self.temperature

    @classmethod
    def train_config(cls, train: Any, params: dict[str, Any]) -> Any:
        """The student's TrainConfig under this method with ``params`` (its method_params):
        unchanged, except for methods with an initialisation phase (``init_epochs``)."""
        return train

    @classmethod
    def resolve_params(cls, params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        """``params`` (the method's ``method_params`` block) validated and typed: int
        parameters as int, float ones as float, choices as str. Every parameter is required
        (its default is in presets/default.yaml); an error names the key."""
        cls.validate_params(params, prefix or f"method_params.{cls.name}.")
        out: dict[str, Any] = {k: kind(params[k]) for k, (kind, _, _) in cls.schema.items()}
        out.update({k: str(params[k]) for k in cls.choices})
        return out

    @classmethod
    def validate_params(cls, params: dict[str, Any], prefix: str) -> None:
        """Raise ConfigError naming any missing, unknown, mistyped or out-of-range method
        parameter."""
        if not isinstance(params, dict):
            raise ConfigError(
                f"params.yaml: {prefix.rstrip('.')} = {params!r} is not allowed; "
                "allowed: a mapping of the method's parameters"
            )
        for key in [*cls.schema, *cls.choices]:
            if key not in params:
                raise ConfigError(
                    f"params.yaml: {prefix}{key} is missing (method {cls.name!r} takes "
                    f"{', '.join([*cls.schema, *cls.choices])}; defaults: presets/default.yaml)"
                )
        for key, value in params.items():
            if key in cls.choices:
                if not isinstance(value, str) or value not in cls.choices[key]:
                    raise ConfigError(
                        f"params.yaml: {prefix}{key} = {value!r} is not allowed; "
                        f"allowed: {' | '.join(cls.choices[key])}"
                    )
                continue
            if key not in cls.schema:
                names = [*cls.schema, *cls.choices]
                near = difflib.get_close_matches(str(key), names, n=1)
                hint = f"did you mean {prefix}{near[0]}? " if near else ""
                raise ConfigError(
                    f"params.yaml: {prefix}{key} is not a parameter of method {cls.name!r}; "
                    f"{hint}allowed: {', '.join(names) or 'none (use {})'}"
                )
            kind, lo, hi = cls.schema[key]
            ok = int if kind is int else (int, float)
            bad = isinstance(value, bool) or not isinstance(value, ok)
            if bad or value < lo or (hi is not None and value > hi):
                rng = f"[{lo:g}, {hi:g}]" if hi is not None else f">= {lo:g}"
                what = "an integer" if kind is int else "a number"
                raise ConfigError(
                    f"params.yaml: {prefix}{key} = {value!r} is not allowed; allowed: {what} {rng}"
                )

    def ce_term(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (1.0 - self.alpha) * F.cross_entropy(logits, labels)

    def forward_train(
        self, batch: Batch, epoch: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Student logits and the weighted loss terms for one batch."""
        logits = self.student(batch.x)
        return logits, {"ce": F.cross_entropy(logits, batch.y)}

    def forward_test(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at evaluation time (SimKD overrides this to reuse the teacher classifier)."""
        return self.student(x)

    @torch.no_grad()
    def evaluate(self, loader) -> dict[str, float]:
        """Accuracy (percent) and cross-entropy of :meth:`forward_test` on ``loader``'s split,
        plus top-5 accuracy (``val_top5``) with more than :data:`TOP5_MIN_CLASSES` classes."""
        correct = top5 = total = 0
        loss = 0.0
        classes = 0
        for batch in loader:
            logits = self.forward_test(batch.x)
            classes = logits.shape[1]
            loss += float(F.cross_entropy(logits, batch.y, reduction="sum"))
            correct += int((logits.argmax(1) == batch.y).sum())
            if classes > TOP5_MIN_CLASSES:
                hits = logits.topk(5, dim=1).indices == batch.y[:, None]
                top5 += int(hits.any(1).sum())
            total += len(batch.y)
        n = max(total, 1)
        out = {"val_acc": 100.0 * correct / n, "val_loss": loss / n}
        if classes > TOP5_MIN_CLASSES:
            out["val_top5"] = 100.0 * top5 / n
        return out

    def extra_state(self) -> dict[str, Any]:
        """Modules trained alongside the student (regressors, projectors) to save with it."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`extra_state`: load each saved child module's state dict (a
        student file's ``extra_state`` into a Distiller rebuilt around that student)."""
        children = dict(self.named_children())
        for name, sd in state.items():
            if name not in children:
                raise ValueError(
                    f"method {self.name!r}: saved extra state {name!r} matches no module; "
                    f"allowed: {', '.join(n for n in children if n != 'student') or 'none'}"
                )
            children[name].load_state_dict(sd)
