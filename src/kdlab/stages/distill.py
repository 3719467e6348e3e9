"""``distill@<method>`` stages: a student trained with one method's knowledge."""

from __future__ import annotations

import argparse
import sys
import time

from kdlab import paths
from kdlab.artifacts import load_data, loaders, make_model, save_model
from kdlab.config import Config
from kdlab.fitting import (
    divergence_rule,
    end_training,
    evaluate_final_and_best,
    finish_training_stage,
    fit_logged,
    parallel,
    start_training,
)
from kdlab.knowledge import build_distiller
from kdlab.live import EpochLog
from kdlab.methods import get_method
from kdlab.models import count_params
from kdlab.stages.common import run
from kdlab.train import fingerprint


def distill_hint(method: str, distiller) -> str:
    """The params.yaml knobs a diverging ``distill@<method>`` most likely needs changed."""
    own = "temperature" in distiller.params
    temp = f"method_params.{method}.temperature" if own else "temperature"
    return f"student.train.lr, alpha or {temp} (now {distiller.term_temperature:g})"


def distill(cfg: Config, method: str) -> None:
    """Train the student with ``method``; save weights, metrics and per-term loss curves."""
    t0 = time.time()
    if method not in cfg.methods:
        raise ValueError(f"method {method!r} is not in params.yaml methods {list(cfg.methods)}")
    get_method(method)  # an unknown name fails here, before any work
    mc = cfg.student
    device = start_training(cfg, "distill")
    data = load_data(cfg)
    student = make_model(mc, data.spec, device)
    distiller, source = build_distiller(cfg, method, data, student, device)
    print(
        f"[distill@{method}] {mc.model} student from {source}; alpha {cfg.alpha}, "
        f"T {distiller.term_temperature}, {mc.train.epochs} epochs on {device}",
        flush=True,
    )
    # Methods with an initialisation phase (init_epochs) train that many epochs more.
    train_cfg = get_method(method).train_config(mc.train, cfg.method_params[method])
    train, val, test = loaders(cfg, data, mc, device, seed=cfg.students_seed)
    # Every param that shapes this run: a checkpoint written under others is never resumed.
    run_id = fingerprint(
        [method, cfg.students_seed, cfg.alpha, cfg.temperature, cfg.data.__dict__, mc.__dict__]
        + [cfg.method_params[method], str(device)]
    )
    ckpt = paths.CHECKPOINTS / f"distill_{method}.pt"
    log = EpochLog(f"distill/{method}", method)
    result = fit_logged(
        log,
        distiller,
        train,
        val,
        train_cfg,
        f"distill@{method}",
        ckpt,
        run_id,
        test_loader=test,
        divergence=divergence_rule(data.spec, distill_hint(method, distiller), distiller),
        **parallel(cfg),
    )
    end_training()
    metrics = evaluate_final_and_best(distiller, result, test)
    metrics.update(
        method=method,
        alpha=cfg.alpha,
        temperature=distiller.term_temperature,
        params=count_params(student),
        train_time_s=round(result.wall_time_s, 2),
    )
    extra = distiller.extra_state()
    save_model(paths.distilled(method), student, mc, data.spec, extra_state=extra)
    finish_training_stage(f"distill/{method}", log, result, metrics, t0)
    print(f"[distill@{method}] test accuracy {metrics['test_acc']:.2f}%", flush=True)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("method", help="a method of params.yaml's methods")


def main(argv: list[str] | None = None) -> int:
    """``python -m kdlab.stages.distill METHOD``."""
    return run(
        "kdlab.stages.distill", "distill", argv, lambda c, a: distill(c, a.method), _arguments
    )


if __name__ == "__main__":
    sys.exit(main())
