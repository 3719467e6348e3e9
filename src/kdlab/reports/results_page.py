"""The numbers of docs/results.md, generated from committed files (``kdlab results``).

Every number on that page sits in a generated block (``<!-- results:NAME:start -->`` ...,
:mod:`kdlab.reports.blocks`) rendered here from what the repository commits: the default run's stage
records (``metrics/*.json``) and ``params.yaml``, the papers' published numbers
(``kdlab/papers/*.yaml``), the report records and tables under ``results/``. The prose between
the blocks states no number, so a rerun can never leave the page stale: ``kdlab results``
rewrites the blocks, and a test holds the committed page equal to its regeneration.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from kdlab.reports import blocks
from kdlab.reports.papers import published
from kdlab.reports.records import FINAL_EPOCH, WHAT_RAN, number, what_ran
from kdlab.reports.runs import preset_of
from kdlab.reports.tables import COST_STAGES, cost_rows, model_text, ran_on, to_markdown

PAGE = Path("docs/results.md")
METHODS = ("kd", "reffakd", "dkd", "reffakd_dkd")
LABELS = {
    "ce": "CE baseline",
    "teacher": "teacher",
    "kd": "KD",
    "reffakd": "ReffAKD",
    "dkd": "DKD",
    "reffakd_dkd": "ReffAKD + DKD",
}
# The stages of the default pipeline whose records hold a wall time.
STAGES = (
    "download",
    "teacher",
    "student",
    "cae",
    "soft_labels",
    *(f"distill/{m}" for m in METHODS),
    "profile",
    "analysis",
    "probe",
)


class Page:
    """The committed files of a checkout at ``root``, read once each."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._cache: dict[str, Any] = {}

    def json(self, rel: str) -> Any:
        if rel not in self._cache:
            path = self.root / rel
            self._cache[rel] = json.loads(path.read_text(encoding="utf-8"))
        return self._cache[rel]

    def metrics(self, stage: str) -> dict[str, Any]:
        path = self.root / "metrics" / f"{stage}.json"
        return self.json(f"metrics/{stage}.json") if path.exists() else {}

    def params(self) -> dict[str, Any]:
        if "params" not in self._cache:
            text = (self.root / "params.yaml").read_text(encoding="utf-8")
            self._cache["params"] = yaml.safe_load(text)
        return self._cache["params"]

    def csv(self, rel: str) -> pd.DataFrame:
        return pd.read_csv(self.root / rel, dtype=str, keep_default_na=False)


def duration(seconds: float) -> str:
    """``17 min 3 s`` (``48 s`` under a minute)."""
    s = round(seconds)
    return f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"


def signed(v: float) -> str:
    return f"{v:+.2f}"


def _acc(page: Page, model: str, key: str = "test_acc") -> float | None:
    stage = {"ce": "student", "teacher": "teacher"}.get(model, f"distill/{model}")
    return page.metrics(stage).get(key)


def _models(page: Page) -> tuple[str, str]:
    """The student and the teacher of the run, each as :func:`model_text` words."""

    def one(role: str) -> str:
        m = page.params()[role]
        params = page.metrics(role).get("params")
        return model_text(m["model"], m["train"]["epochs"], params, m.get("options"), role)

    return one("student"), one("teacher")


def _device(page: Page, stages=STAGES) -> str:
    return ran_on(page.metrics(s).get("device") for s in stages if page.metrics(s))


# ---------------------------------------------------------------------------------------------
# The default CPU preset (metrics/, params.yaml)


def default_run(page: Page) -> str:
    """Which run the page's default-preset numbers are, what it trained and what it cost."""
    walls = {s: page.metrics(s)["wall_time_s"] for s in STAGES if page.metrics(s)}
    longest = max(walls, key=walls.get)
    student, teacher = _models(page)
    p = page.params()
    return (
        f"The default preset trains a {teacher} and distils a {student} (preset "
        f"`{preset_of(p)}`, data `{p['data']['name']}`, seed {p['seed']}). "
        f"The committed stage records (`metrics/*.json`) measured {duration(sum(walls.values()))}"
        f" of wall time over {len(walls)} stages, the longest `{longest}` "
        f"({duration(walls[longest])}); device: {_device(page)}.\n"
    )


def table4_default(page: Page) -> str:
    """ReffAKD Table 4 at the default CPU preset: ours (final and best-val epoch) beside the
    paper's, and every method's difference to the CE baseline."""
    pub = published("reffakd")
    paper = {k: v["value"] for k, v in pub["accuracy"]["fashion_mnist"]["rows"].items()}
    paper["ce"] = paper.pop("student_ce")
    p = page.params()
    student, teacher = _models(page)
    own_t = {
        m: page.metrics(f"distill/{m}").get("temperature")
        for m in METHODS
        if page.metrics(f"distill/{m}").get("temperature") not in (None, p["temperature"])
    }
    own = "; ".join(f"{LABELS[m]} its own T {t:g}" for m, t in own_t.items())
    kl = (p.get("method_params") or {}).get("kd", {}).get("reduction")
    rows = []
    for model in ("ce", "teacher", *METHODS):
        rows.append(
            {
                "model": LABELS[model],
                "paper": paper.get(model),
                "ours, final epoch": _acc(page, model),
                "ours, best-val epoch": _acc(page, model, "test_acc_at_best_val"),
            }
        )
    ce = _acc(page, "ce")
    diffs = ", ".join(
        f"{LABELS[m]} {signed(_acc(page, m) - ce)}" for m in METHODS if _acc(page, m) is not None
    )
    return (
        f"Test accuracy (%) of the default CPU preset (a {student}, a {teacher}; alpha "
        f"{p['alpha']:g}, T {p['temperature']:g}" + (f" ({own})" if own else "") + f", KL "
        f"`{kl}` for KD, seed {p['seed']}) beside the paper's ({pub['accuracy_scale']}, best "
        "of a T x alpha grid):\n\n"
        + to_markdown(pd.DataFrame(rows))
        + f"\nAgainst the CE baseline, final epoch, one seed: {diffs} points.\n"
    )


def soft_labels(page: Page) -> str:
    """The soft-label matrix: its flatness, the gamma chosen, rows peaking on their class."""
    rec = page.metrics("soft_labels")
    from kdlab import presets

    paper_gamma = yaml.safe_load(presets.resolve("paper"))["soft_labels"]["gamma"]
    n = rec["num_classes"]
    how = "the grid search chose" if rec.get("gamma_searched") else "params set"
    return (
        f"Its mean diagonal probability is {rec['mean_diagonal_prob']:.3f} (a uniform row: "
        f"{1 / n:.3f}); {how} gamma = {rec['gamma']:g} (the paper: {paper_gamma:g}), at which "
        f"{rec['rows_own_class_max']} of {n} rows peak on their own class "
        "([metrics/soft_labels.json](../metrics/soft_labels.json)).\n"
    )


def _compare(value: float, ref: float, more: str, less: str) -> str:
    return more if value > ref else less if value < ref else "equal"


def analysis(page: Page) -> str:
    """How close each student is to the teacher (analyse and probe stages)."""
    models = page.json("metrics/analysis.json")["models"]
    probe = page.json("metrics/probe.json")["models"]
    data = page.json("metrics/probe.json")["datasets"][0]
    rows = []
    for m in ("ce", *METHODS):
        a = models[m]
        rows.append(
            {
                "student": LABELS[m],
                "test acc": a["test_acc"],
                "KL(teacher ‖ student)": f"{a['kl_teacher']:.4f}",
                "CE to labels": f"{a['ce_label']:.4f}",
                "NMI of features (%)": a["nmi"],
                "linear probe (%)": probe[m][f"probe_{data}"],
            }
        )
    ce = models["ce"]
    kl = "; ".join(
        f"{LABELS[m]} {models[m]['kl_teacher']:.4f} "
        f"({_compare(models[m]['kl_teacher'], ce['kl_teacher'], 'farther', 'closer')})"
        for m in METHODS
    )
    nmi = "; ".join(
        f"{LABELS[m]} {models[m]['nmi']:.2f} "
        f"({_compare(models[m]['nmi'], ce['nmi'], 'higher', 'lower')})"
        for m in METHODS
    )
    return (
        to_markdown(pd.DataFrame(rows))
        + f"\nThe teacher's own NMI is {models['teacher']['nmi']:.2f}. KL to the teacher, "
        f"against the CE baseline's {ce['kl_teacher']:.4f}: {kl}. NMI against the CE "
        f"baseline's {ce['nmi']:.2f}: {nmi}.\n"
    )


TABLE6_ROWS = (  # (data set, variant in profile.json, mode, label)
    ("cifar100", "cifar100", "torchscan", "ours, torchscan convention"),
    ("cifar100", "cifar100", "fvcore", "ours, fvcore (correct)"),
    ("tiny_imagenet", "tiny_imagenet", "torchscan", "ours, torchscan convention"),
    ("tiny_imagenet", "tiny_imagenet", "fvcore", "ours, fvcore (correct)"),
    (
        "fashion_mnist",
        "fashion_mnist_as_published",
        "torchscan",
        "ours, torchscan, the paper's mis-built models",
    ),
    ("fashion_mnist", "fashion_mnist", "torchscan", "ours, torchscan, correct models"),
    ("fashion_mnist", "fashion_mnist", "fvcore", "ours, fvcore, correct models"),
)
DATA_NAMES = {"cifar100": "CIFAR-100", "tiny_imagenet": "Tiny ImageNet"}
DATA_NAMES["fashion_mnist"] = "Fashion-MNIST"


def table6(page: Page) -> str:
    """ReffAKD Table 6 (teacher / CAE) in both counting modes beside the paper's."""
    pub = published("reffakd")["table6"]
    prof = page.json("metrics/profile.json")["table6"]
    keys = ("flops", "macs", "params", "memory")
    rows = []
    for data in pub:
        rows.append(
            {"data set": DATA_NAMES[data], "counted by": "paper", **{k: pub[data][k] for k in keys}}
        )
        for d, variant, mode, label in TABLE6_ROWS:
            if d == data:
                ratios = prof[variant][mode]["ratios"]
                rows.append(
                    {
                        "data set": DATA_NAMES[data],
                        "counted by": label,
                        **{k: f"{ratios[k]:.1f}" for k in keys},
                    }
                )
    c = prof["cifar100"]
    factor = c["fvcore"]["ratios"]["flops"] / c["torchscan"]["ratios"]["flops"]
    return (
        "| data set | counted by | FLOPs | MACs | params | memory |\n|---|---|---|---|---|---|\n"
        + "".join(
            f"| {r['data set']} | {r['counted by']} | "
            + " | ".join(str(r[k]) for k in keys)
            + " |\n"
            for r in rows
        )
        + f"\nCounted correctly (fvcore), the teacher / CAE FLOPs ratio is {factor:.1f}x the "
        "torchscan-convention ratio on CIFAR-100: the convention makes the CAE look that much "
        "more expensive than it is.\n"
    )


def cost(page: Page) -> str:
    """What producing the soft labels costs against training the teacher (stage records)."""
    rows = cost_rows({s: page.metrics(s) or None for s in COST_STAGES})
    if len(rows) < 3:
        return "The cost records are not all committed.\n"
    teacher, soft, ratio = rows
    return (
        f"The committed records: {soft['wall_time_s']:,.1f} s and {soft['peak_rss_mib']:,.0f} "
        f"MiB peak for the soft labels against {teacher['wall_time_s']:,.1f} s and "
        f"{teacher['peak_rss_mib']:,.0f} MiB for the (scaled-down) teacher, "
        f"{ratio['wall_time_s']:.1f}x less time; device: {_device(page, COST_STAGES)}.\n"
    )


# ---------------------------------------------------------------------------------------------
# Reports from experiment grids (results/records/, results/*.csv)


def _records(page: Page, name: str) -> dict[str, Any]:
    from kdlab.reports.records import upgrade

    return upgrade(page.json(f"results/records/{name}.json"))


def _shown(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The cells of a report's main table (its records' main scale)."""
    return [c for c in data["cells"] if c["scale"] == data.get("scale")]


def _what_ran_note(data: dict[str, Any]) -> str:
    """The report's own "What ran" note (generated from its cells by kdlab.reports.records)."""
    for note in data["notes"]:
        if note.startswith(WHAT_RAN):
            return note
    return what_ran(_shown(data), FINAL_EPOCH)


def table10(page: Page) -> str:
    """ReffAKD Table 10 at CPU scale: how ours compares with the paper and ReffAKD with KD."""
    data = _records(page, "reffakd_table10")
    cells = {(c["setting"], c["column"]): c["scores"] for c in _shown(data)}
    settings = sorted(
        {s for s, _ in cells}, key=lambda s: [float(x.split("=")[1]) for x in s.split(", ")]
    )
    gaps, vs_kd, paper_ahead, paper_both = [], [], 0, 0
    for s in settings:
        both = {}
        for col in ("reffakd", "vanilla_kd"):
            sc = cells.get((s, col))
            if sc is None:
                continue
            ours, paper = number(sc[f"{col} ours"]), sc[f"{col} paper"]
            both[col] = (ours, paper)
            if ours is not None and isinstance(paper, (int, float)):
                gaps.append(ours - paper)
        if len(both) == 2:
            vs_kd.append((both["reffakd"][0] - both["vanilla_kd"][0], s))
            pr, pk = both["reffakd"][1], both["vanilla_kd"][1]
            if isinstance(pr, (int, float)) and isinstance(pk, (int, float)):
                paper_both += 1
                paper_ahead += pr > pk
    behind = [(d, s) for d, s in vs_kd if d < 0]
    by = ""
    if behind:

        def at(value: float) -> str:  # every setting that prints this gap (ties named)
            return "; ".join(s for d, s in behind if f"{d:.2f}" == f"{value:.2f}")

        lo, hi = min(d for d, _ in behind), max(d for d, _ in behind)
        by = f", by {-hi:.2f} ({at(hi)}) to {-lo:.2f} ({at(lo)}) points"
    return (
        f"{len(cells)} cells over {len(settings)} settings ([results/records/reffakd_table10.json]"
        "(../results/records/reffakd_table10.json)). "
        + _what_ran_note(data)
        + f" Ours minus the paper ranges from {min(gaps):+.2f} to {max(gaps):+.2f} points over the "
        f"{len(gaps)} cells the paper prints. ReffAKD trails KD in {len(behind)} of "
        f"{len(vs_kd)} settings{by}; "
        f"the paper has ReffAKD ahead in {paper_ahead} of the {paper_both} settings where it "
        "prints both.\n"
    )


SRRL_ROWS = {
    "student": "CE student",
    "fm@conv4": "L_FM alone (conv4)",
    "sr@conv4": "L_SR alone (conv4)",
    "fm+sr@conv4": "L_FM + L_SR, conv4 (SRRL)",
    "fm+sr@conv2": "L_FM + L_SR, conv2",
    "fm+sr@conv3": "L_FM + L_SR, conv3",
    "fm+sr@conv2+3+4": "L_FM + L_SR, conv2+3+4",
}
SIMKD_ROWS = {
    "multiple_projector_bias": "multiple projectors",
    "all_layers_unbiased": "all-layer projectors",
    "ground_truth_labels": "ground-truth gating",
}


def _note(data: dict[str, Any], start: str) -> str:
    return next((n for n in data["notes"] if n.startswith(start)), "")


def direction_checks(page: Page) -> str:
    """SRRL Table 1 and the SimKD study as direction checks on Fashion-MNIST."""
    srrl = page.csv("results/srrl_table1_fmnist.csv")
    rec = _records(page, "srrl_table1_fmnist")
    teacher = srrl[srrl["method"] == "teacher"].iloc[0]
    n = sorted({r for r in srrl["top1 n"] if r not in ("", "0")})
    rows = "".join(
        f"| {SRRL_ROWS[r['method']]} | {r['top1 ours']} | "
        + (
            "— | — | |"
            if r["method"] == "student"
            else f"{_signed_cell(r['top1 - ce ours'])} | "
            f"{_signed_cell(r['top1 - ce paper'])} | {r['direction']} |"
        )
        + "\n"
        for _, r in srrl.iterrows()
        if r["method"] in SRRL_ROWS
    )
    simkd = page.csv("results/simkd_study_fmnist.csv")
    simkd_rec = _records(page, "simkd_study_fmnist")
    srows = ""
    gains, accs = [], []
    for _, r in simkd.iterrows():
        proj, loss = r["projector/loss"].split("/")
        srows += (
            f"| {SIMKD_ROWS[proj]}, {loss.upper() if loss == 'kl' else 'L2'} | "
            f"{r['test_acc ours']} | {_signed_cell(r['test_acc - ce ours'])} | "
            f"{_signed_cell(r['test_acc - ce paper'])} | {r['direction']} |\n"
        )
        gains.append(number(r["test_acc - ce ours"]))
        accs.append(number(r["test_acc ours"]))
    return (
        _what_ran_note(rec)
        + f" Mean ± std over {', '.join(n)} seeds, the change paired by seed:\n\n"
        "| SRRL Table 1 row | top-1 | vs CE (ours) | vs student (paper) | direction |\n"
        "|---|---:|---:|---:|---|\n"
        + rows
        + f"\nThe teacher: {teacher['top1 ours']}. {_note(rec, 'Order of the')}\n\n"
        "| SimKD study row | test acc | vs CE (ours) | vs baseline (paper) | direction |\n"
        "|---|---:|---:|---:|---|\n"
        + srows
        + f"\nEvery SimKD variant lands {min(gains):.2f} to {max(gains):.2f} points above the CE "
        f"student, their means within {max(accs) - min(accs):.2f} points of each other. "
        f"{_note(simkd_rec, 'Order of the')}\n"
    )


def _signed_cell(v: str) -> str:
    x = number(v)
    if x is None or v.startswith(("+", "-")):
        return v
    return ("+" if x >= 0 else "") + v


# ---------------------------------------------------------------------------------------------
# The partial GPU run (results/paper_fmnist_gpu/)


def gpu_run(page: Page) -> str:
    """The paper-scale run on a borrowed GPU: its device, final-epoch scores, partial students."""
    base = "results/paper_fmnist_gpu"
    pub = published("reffakd")["accuracy"]["fashion_mnist"]["rows"]
    t, s = page.json(f"{base}/records/teacher.json"), page.json(f"{base}/records/student.json")
    sl = page.json(f"{base}/records/soft_labels.json")
    device = page.json(f"{base}/bench_gpu.json")["device"]
    partial = []
    for m in ("reffakd", "reffakd_dkd"):
        lines = (page.root / base / "curves" / f"{m}_val_acc_partial.tsv").read_text()
        partial.append(f"{LABELS[m]} {len(lines.strip().splitlines()) - 1}")
    params = yaml.safe_load((page.root / base / "params.yaml").read_text(encoding="utf-8"))
    epochs = params["student"]["train"]["epochs"]
    return (
        f"Device: one {device} (its `bench_gpu.json`). The {t['epochs']}-epoch ResNet18 teacher "
        f"({t['params']:,} params) reaches **{t['test_acc']:.2f}** (paper "
        f"{pub['teacher']['value']:.2f}), the {s['epochs']}-epoch LeNet5 CE student "
        f"**{s['test_acc']:.2f}** (paper {pub['student_ce']['value']:.2f}), both final-epoch "
        f"(best-validation epoch: {t['test_acc_at_best_val']:.2f} and "
        f"{s['test_acc_at_best_val']:.2f}); the CAE's soft labels peak on their own class in "
        f"{sl['rows_own_class_max']} of {sl['num_classes']} rows. The distilled students did not "
        f"finish their {epochs} epochs (epochs finished when the device time ran out: "
        f"{', '.join(partial)}; `curves/*_partial.tsv`); "
        "KD and DKD waited for the teacher. Training times from the records: teacher "
        f"{duration(t['train_time_s'])}, CE student {duration(s['train_time_s'])}.\n"
    )


BLOCKS: dict[str, Callable[[Page], str]] = {
    "results:default-run": default_run,
    "results:table4-default": table4_default,
    "results:soft-labels": soft_labels,
    "results:analysis": analysis,
    "results:table6": table6,
    "results:cost": cost,
    "results:table10": table10,
    "results:direction-checks": direction_checks,
    "results:gpu-run": gpu_run,
}


def render(root: Path) -> dict[str, str]:
    """Every generated block of the results page, from the files committed under ``root``."""
    page = Page(root)
    return {name: build(page) for name, build in BLOCKS.items()}


def update(path: Path, root: Path | None = None, links_from: Path | None = None) -> bool:
    """Rewrite the generated blocks of the page ``path`` (the numbers and the catalogue) from
    the files under ``root`` (default: the working directory), links relative to
    ``links_from`` (default ``path``); True when it changed."""
    from kdlab.reports import catalogue

    root = root or Path.cwd()
    new = render(root)
    if "papers" in blocks.names(Path(path).read_text(encoding="utf-8")):
        entries = catalogue.catalogue(root)
        prefix = catalogue.page_prefix(links_from or path, root)
        new["papers"] = catalogue.readme_results(entries, prefix)
    return blocks.update(path, new)
