"""Shared machinery of the feature-based methods: a live, frozen teacher tapped for features.

A :class:`FeatureDistiller` holds the teacher model outside its module tree (so it is not in
``parameters()``, ``state_dict()`` or ``extra_state()`` and ``train()`` never touches it) and,
at construction, runs one dummy batch of shape ``input_shape`` through teacher and student to
learn the feature shapes its extra modules (regressors, connectors, projectors, embeddings)
are built for. A model without ``forward_features`` (or without a tap a method needs) fails
there, at the start of the run, with a ValueError naming the model class and the tap.

Stage pairing: the student's and the teacher's stage lists may differ in length (LeNet5 has 2,
the CIFAR ResNets 4); ``k = min(n_s, n_t)`` pairs are made at proportional depths, the last
stage always paired with the last (LeNet5 -> ResNet18: (1 -> 2), (2 -> 4)).

Weighting: every feature method trains ``(1 - alpha) CE + alpha * w * L`` where ``w`` is the
method's own weight in ``method_params``. The reference code (RepDistiller, Tian et al. 2020)
trains ``gamma CE + beta L`` with gamma = 1; its beta is our ``w`` (at alpha = 0.5 the two
differ only by a global factor 1/2 on the loss, i.e. on the learning rate). Feature maps of
different spatial sizes are brought to the smaller size by adaptive average pooling.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from kdlab.data.pipeline import Batch, resize
from kdlab.methods.base import Distiller


def pair_stages(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """``min(n_s, n_t)`` (student, teacher) stage index pairs at proportional depths."""
    k = min(n_student, n_teacher)
    return [((j + 1) * n_student // k - 1, (j + 1) * n_teacher // k - 1) for j in range(k)]


def conv_bn(cin: int, cout: int, kernel: int = 1, relu: bool = True) -> nn.Sequential:
    """``kernel x kernel`` convolution (same padding, no bias) + BatchNorm (+ ReLU)."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ConvReg(nn.Module):
    """RepDistiller's ``ConvReg`` (``models/util.py`` line 131): a convolution with bias from the
    student map's shape to the teacher's, BatchNorm, then ReLU (``relu=False``: none, AB's
    connector). Its kernel depends on the spatial sizes, as the reference: student twice the
    teacher's size: 3x3 stride 2; half: 4x4 transposed stride 2; larger or equal: a valid
    ``(1 + s_H - t_H) x (1 + s_W - t_W)`` kernel (1x1 at equal sizes). Where the reference
    raises (the student smaller, not half), a 1x1 conv is used and the caller pools the
    teacher's map to the student's size.
    """

    def __init__(
        self, s_shape: tuple[int, ...], t_shape: tuple[int, ...], relu: bool = True
    ) -> None:
        super().__init__()
        (s_c, s_h, s_w), (t_c, t_h, t_w) = s_shape[-3:], t_shape[-3:]
        if s_h == 2 * t_h:
            self.conv: nn.Module = nn.Conv2d(s_c, t_c, 3, stride=2, padding=1)
        elif 2 * s_h == t_h:
            self.conv = nn.ConvTranspose2d(s_c, t_c, 4, stride=2, padding=1)
        elif s_h >= t_h:
            self.conv = nn.Conv2d(s_c, t_c, (1 + s_h - t_h, 1 + s_w - t_w))
        else:
            self.conv = nn.Conv2d(s_c, t_c, 1)
        self.bn = nn.BatchNorm2d(t_c)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return nn.functional.relu(x) if self.relu else x


def head_map(out: dict[str, Any]) -> torch.Tensor:
    """The map a model's head pools (``forward_features``' ``"head_map"``: a WRN's last tap
    after its final BN-ReLU, MobileNetV2's after its 1x1 head conv); the last stage tap for
    models that do not give one."""
    head = out.get("head_map")
    return out["stages"][-1] if head is None else head


def resize_map(f: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Adaptive average pooling of a feature map to ``size`` (no-op when already that size)."""
    if tuple(f.shape[-2:]) == tuple(size):
        return f
    return nn.functional.adaptive_avg_pool2d(f, size)


class FeatureDistiller(Distiller):
    """Base class of the methods that tap a live teacher's features.

    Keyword Args:
        teacher_model: the trained teacher, a FeatureClassifier (``forward_features``); it is
            put in eval mode and its parameters stop requiring gradients.
        input_shape: the student's input ``(C, H, W)``, for the dummy pass that sizes the
            method's extra modules.
        teacher_input_size: the teacher's input size when it differs from the student's
            (batches are resized bilinearly, as for a live logit teacher).
        num_data: number of data-set positions (``batch.index`` < num_data); CRD's memory size.
        train_labels: optional, ``num_data`` labels with -1 at every position outside the
            training split (validation, left out by ``data.subset``); CRD draws its negatives
            from the training positions of other classes only (as RepDistiller).
    """

    needs_teacher_features: ClassVar[bool] = True
    # Entries of forward_features() the method reads, from the student and the teacher.
    student_taps: ClassVar[tuple[str, ...]] = ("stages", "pooled", "logits")
    teacher_taps: ClassVar[tuple[str, ...]] = ("stages", "pooled", "logits")
    # Attributes of the teacher model the method reuses (SRRL, SimKD: its classifier).
    teacher_modules: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *args: Any,
        teacher_model: nn.Module | None = None,
        input_shape: tuple[int, int, int] | None = None,
        teacher_input_size: int | None = None,
        num_data: int | None = None,
        train_labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> None:
        # The base Distiller's arguments (student, params, alpha, ...) pass through unchanged.
        super().__init__(*args, **kwargs)
        student = self.student
        if teacher_model is None:
            raise ValueError(f"method {self.name!r} needs a live teacher model (teacher_model=)")
        if input_shape is None or len(input_shape) != 3:
            raise ValueError(f"method {self.name!r} needs the student's input_shape (C, H, W)")
        for role, model in (("teacher", teacher_model), ("student", student)):
            if not callable(getattr(model, "forward_features", None)):
                raise ValueError(
                    f"method {self.name!r} needs feature taps (forward_features) from the "
                    f"{role}, which {type(model).__name__} does not provide"
                )
        for attr in self.teacher_modules:
            if not callable(getattr(teacher_model, attr, None)):
                raise ValueError(
                    f"method {self.name!r} needs the teacher's {attr!r} (feature tap), which "
                    f"{type(teacher_model).__name__} does not provide"
                )
        teacher_model.eval()
        for p in teacher_model.parameters():
            p.requires_grad_(False)
        # A tuple is not registered by nn.Module: the teacher stays out of parameters(),
        # state_dict(), extra_state() and train()/eval().
        self._teacher_box = (teacher_model,)
        self.teacher_input_size = teacher_input_size
        self.input_shape = tuple(int(v) for v in input_shape)
        self.num_data = num_data
        self.train_labels = train_labels
        s_out, t_out = self._probe()
        self.s_shapes = [tuple(f.shape[1:]) for f in s_out["stages"]]
        self.t_shapes = [tuple(f.shape[1:]) for f in t_out["stages"]]
        self.s_head_shape = tuple(head_map(s_out).shape[1:])
        self.t_head_shape = tuple(head_map(t_out).shape[1:])
        # The stem's map (RepDistiller's feat[0]) where both models give it (FSP reads it).
        stems = (s_out.get("stem"), t_out.get("stem"))
        self.stem_shapes = (
            tuple(tuple(f.shape[1:]) for f in stems) if all(f is not None for f in stems) else None
        )
        self.s_dim = int(s_out["pooled"].shape[1])
        self.t_dim = int(t_out["pooled"].shape[1])
        self.pairs = pair_stages(len(self.s_shapes), len(self.t_shapes))

    @property
    def teacher_model(self) -> nn.Module:
        """The frozen teacher (not a submodule)."""
        return self._teacher_box[0]

    def student_device(self) -> torch.device:
        """The device of the student's parameters (CPU for a parameter-free student)."""
        try:
            return next(self.student.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    @torch.no_grad()
    def _probe(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """One dummy pass (student in eval mode, so BN statistics are untouched)."""
        x = torch.zeros(2, *self.input_shape, device=self.student_device())
        was_training = self.student.training
        self.student.eval()
        try:
            s_out = self.student.forward_features(x)
        finally:
            self.student.train(was_training)
        t_out = self.teacher_model.forward_features(self._teacher_input(x))
        for role, out, taps in (
            ("student", s_out, self.student_taps),
            ("teacher", t_out, self.teacher_taps),
        ):
            model = self.student if role == "student" else self.teacher_model
            for tap in taps:
                value = out.get(tap) if isinstance(out, dict) else None
                if value is None or (tap == "stages" and len(value) == 0):
                    raise ValueError(
                        f"method {self.name!r} needs the {tap!r} feature tap from the {role}, "
                        f"which {type(model).__name__} does not provide"
                    )
            for f in out["stages"]:
                if f.dim() != 4:
                    raise ValueError(
                        f"method {self.name!r} needs N x C x H x W stage feature maps from the "
                        f"{role}; {type(model).__name__} gives shape {tuple(f.shape)}"
                    )
        return s_out, t_out

    def _teacher_input(self, x: torch.Tensor) -> torch.Tensor:
        return resize(x, self.teacher_input_size) if self.teacher_input_size else x

    @torch.no_grad()
    def teacher_features(self, batch: Batch) -> dict[str, Any]:
        """The frozen teacher's ``forward_features`` on this batch (no gradients); a grid's
        shared pass (``batch.teacher_out``) when the grid computed it."""
        if batch.teacher_out is not None:
            return batch.teacher_out
        return self.teacher_model.forward_features(self._teacher_input(batch.x))

    def extra_state(self) -> dict[str, Any]:
        """State dicts of every trained extra module (all children but the student)."""
        return {
            name: module.state_dict() for name, module in self.named_children() if name != "student"
        }

    def distill_terms(
        self, s: dict[str, Any], t: dict[str, Any], batch: Batch, epoch: int
    ) -> dict[str, torch.Tensor]:
        """The method's named distillation terms, with the method's own weights applied (the
        project's ``alpha`` is applied by :meth:`forward_train`)."""
        raise NotImplementedError

    def forward_train(
        self, batch: Batch, epoch: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(1 - alpha) CE + alpha * sum(distill_terms)`` on the student's own logits."""
        s = self.student.forward_features(batch.x)
        t = self.teacher_features(batch)
        logits = s["logits"]
        losses = {"ce": self.ce_term(logits, batch.y)}
        for key, value in self.distill_terms(s, t, batch, epoch).items():
            losses[key] = self.alpha * value
        return logits, losses


def last_pairs(pairs: list[tuple[int, int]], n: int, name: str) -> list[tuple[int, int]]:
    """The stage pairs AT sums over: every pair (``n = 0``) or the last ``n`` (Zagoruyko &
    Komodakis: every group of a WRN, the last two of a ResNet; SRRL's appendix)."""
    if not 0 <= n <= len(pairs):
        raise ValueError(
            f"method_params.{name}.last_pairs = {n} is not allowed; allowed: 0 (every stage "
            f"pair) or a whole number 1..{len(pairs)} (the last stage pairs of {pairs})"
        )
    return pairs[len(pairs) - n :] if n else list(pairs)


def with_init_epochs(train: Any, n: int) -> Any:
    """``train`` (a TrainConfig) with ``n`` initialisation epochs put before it: ``n`` more
    epochs, and the step schedule's milestones (and ``test_epochs``) moved ``n`` later, so the
    init phase runs at the initial lr and the main phase is the recipe unchanged, as
    RepDistiller's ``init()`` (``helper/pretrain.py``: ``--init_epochs 30`` at the initial lr)
    before its 240 epochs. Cosine/onecycle schedules simply span the longer run."""
    if n <= 0:
        return train
    return dataclasses.replace(
        train,
        epochs=train.epochs + n,
        milestones=tuple(m + n for m in train.milestones),
        test_epochs=tuple(e + n for e in train.test_epochs),
    )


class InitPhase(FeatureDistiller):
    """RepDistiller's two-phase schedule for AB and FSP (a mixin: list it before the base).

    ``init_epochs: n > 0``: the method's term alone for ``n`` epochs put before the recipe's
    (:func:`with_init_epochs`), then CE alone (RepDistiller uses these terms only to initialise
    the student); ``0``: both throughout.
    """

    @classmethod
    def train_config(cls, train: Any, params: dict[str, Any]) -> Any:
        return with_init_epochs(train, cls.resolve_params(params)["init_epochs"])

    @property
    def warmup_epochs(self) -> int:
        return self.params["init_epochs"]

    def forward_train(
        self, batch: Batch, epoch: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits, losses = super().forward_train(batch, epoch)
        n = self.params["init_epochs"]
        if n <= 0:
            return logits, losses
        init = epoch < n
        return logits, {k: v * float(init != (k == "ce")) for k, v in losses.items()}


def channel_connector(cin: int, cout: int) -> nn.Module:
    """Identity for equal channel counts (the reference methods need no connector there),
    else a 1x1 conv + BN to the teacher's channels (where the reference would refuse)."""
    return nn.Identity() if cin == cout else conv_bn(cin, cout, 1, relu=False)


class ConnectedPairs(FeatureDistiller):
    """Base of methods that compare consecutive stage pairs after mapping each student map to
    its teacher map's channels (FSP, KD-SVD): no connector where the channels are equal (the
    reference code), else a 1x1 conv + BN connector."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if len(self.pairs) < 2:
            raise ValueError(
                f"method {self.name!r} needs 2 or more stage pairs; the student has "
                f"{len(self.s_shapes)} stages and the teacher {len(self.t_shapes)}"
            )
        self.connectors = nn.ModuleList(
            channel_connector(self.s_shapes[i][0], self.t_shapes[j][0]) for i, j in self.pairs
        )

    def connected_stages(self, s, t) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The paired student maps (through their connectors) and teacher maps."""
        fs = [conn(s["stages"][i]) for (i, _), conn in zip(self.pairs, self.connectors)]
        return fs, [t["stages"][j] for _, j in self.pairs]
