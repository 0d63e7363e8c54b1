"""`clipdistill protocol`: every task x regime x method x seed as one resumable cell, then a results table.

Regimes: low-shot fractions x seeds (nested, stratified subsets of the train split), full data, and
domain-shift splits (`shift_splits`, evaluated with each trained model: regime `shift:<split>`, with the
fraction of the model; regime `train_dev` when a task carves a dev set from train with `dev_fraction`:
choose options on it, report val). Methods: answer prior, baseline fine-tune, naive distillation, CLIP-TD.
Task data is read by the real readers (`clipdistill.data.tasks`); `world` roots relative task folders.
A cell is finished once `cells/<task>/f<fraction>-s<seed>/<method>/result.json` exists; reruns skip it,
unless its recorded config (all but `out` / `world`, the locations) or the hash of the task's annotation
files differs, which is refused (naming the field).
Outputs: `rows.json` (rows {task, kind, regime, fraction, method, seed, metric, value} for `report`),
`results.json` + `results.md` (mean +- std over seeds, absolute and relative gain over the baseline),
`summary.json` (CLIP-TD minus baseline, in points of each task's main metric).
`keep_checkpoints: false` deletes a cell's training checkpoints once its result is written (the task model,
metrics and result stay): a protocol otherwise keeps every cell's optimizer state (tens of GB for a full
sweep on the `default` world).
Low-shot settings: `budget` trains every cell for a number of optimizer steps (one number, or one per fraction:
a 1% subset is not 1% of the full run's steps), with warmup as a share of them and the student's body at
`body_lr_scale` x the heads' lr. `select` chooses options (variants of td. / train. keys) per method, task and
fraction on the task's `dev_fraction` carve of train, for each listed method alike: selection cells are scored on
that carve alone, the val and shift splits are never evaluated for them (`selection.json`). Each cell's result
names its training-set size (`train_examples`) and its score minus the answer prior of the same subset
(`minus_prior`); the tables carry both.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_core import to_jsonable_python

from clipdistill.config import StrictModel
from clipdistill.errors import ConfigError, ManifestMismatch
from clipdistill.manifest import atomic_write_text
from clipdistill.progress import StageProgress
from clipdistill.td.data import TaskConfig, TaskReader
from clipdistill.td.prior import prior_metrics
from clipdistill.td.runner import (
    FinetuneConfig,
    TDRunSettings,
    TDTeacher,
    Trainer,
    cell_data,
    run_finetune,
    shared_settings,
    teacher_section,
)
from clipdistill.td.student import check_student
from clipdistill.td.tasks import TASK_KINDS, task_kind
from clipdistill.train.checkpoint import CKPT_DIR
from clipdistill.train.config import TrainConfig

Method = Literal["baseline", "naive", "clip_td", "prior"]
LOCATION_FIELDS = {"out", "world"}  # where things are, not what runs: moving the world keeps finished cells


class Budget(StrictModel):
    """How long and how fast every trained cell learns: a step budget, not epochs (a 1% subset trained for as
    many epochs as the full set gets 1% of its steps and never leaves the answer prior)."""

    steps: int | dict[float, int] = Field(description="optimizer steps of each cell; {fraction: steps} gives "
                                          "each fraction its own budget (every fraction run must be listed)")
    warmup: float = Field(0.1, ge=0, lt=1, allow_inf_nan=False, description="linear warmup as a share of the "
                          "cell's steps, counted inside them (train.warmup)")
    body_lr_scale: float = Field(1.0, gt=0, allow_inf_nan=False, description="the student's lr (every parameter "
                                 "under `student.`, ours or an hf: ViLT) = train.lr x this; the task head and the "
                                 "CLIP-TD projection heads train at train.lr (0.1: a pretrained body moves slower)")

    @field_validator("steps")
    @classmethod
    def _positive(cls, steps: int | dict[float, int]) -> int | dict[float, int]:
        bad = [n for n in (steps.values() if isinstance(steps, dict) else [steps]) if n < 1]
        if bad:
            raise ValueError(f"budget.steps must be >= 1, got {bad}")
        return steps

    def steps_for(self, fraction: float) -> int:
        return self.steps if isinstance(self.steps, int) else self.steps[fraction]

    def train_for(self, train: TrainConfig, fraction: float) -> TrainConfig:
        """`train` with this budget's steps, warmup share and body / head lr split for a cell of `fraction`."""
        scale = {**train.lr_scale, **({"student": self.body_lr_scale} if self.body_lr_scale != 1.0 else {})}
        return train.model_copy(update={"steps": self.steps_for(fraction), "warmup": self.warmup,
                                        "lr_scale": scale})


class Select(StrictModel):
    """Options of the listed trained methods, chosen per method, task and fraction on the task's dev carve
    (`task.dev_fraction`): every method gets its own selection cells and its own choice among the same variants,
    so a step budget (say) is chosen the same way for CLIP-TD and for the methods it is compared with."""

    methods: list[Method] = ["clip_td"]  # `method: NAME`, the one-method spelling, is read as `methods: [NAME]`
    # variant name -> {dotted td. / train. key: value}, e.g. {uniform: {td.weights.mode: uniform}, lam05: {td.lam: 0.5}}
    variants: dict[str, dict[str, Any]]
    seeds: list[int] | None = None  # seeds the choice averages over; default: the protocol's first seed

    @model_validator(mode="before")
    @classmethod
    def _one_method_spelling(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "method" not in data:
            return data
        if "methods" in data:
            raise ValueError("select.method and select.methods both given: list the methods under select.methods")
        if not isinstance(data["method"], str):
            raise ValueError(f"select.method names one method, got {data['method']!r}: list several under "
                             "select.methods")
        return {**{k: v for k, v in data.items() if k != "method"}, "methods": [data["method"]]}

    @field_validator("methods")
    @classmethod
    def _trained_and_unique(cls, methods: list[str]) -> list[str]:
        if not methods:
            raise ValueError("select.methods is empty: list the trained methods to choose options for")
        if "prior" in methods:
            raise ValueError("select.methods: 'prior' trains nothing, so it has no options to choose")
        twice = sorted({m for m in methods if methods.count(m) > 1})
        if twice:
            raise ValueError(f"select.methods lists {twice} more than once")
        return methods

    @field_validator("variants")
    @classmethod
    def _keys_under_td_or_train(cls, variants: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not variants:
            raise ValueError("select.variants is empty: list at least one variant (an empty dict {} = the config)")
        for name, opts in variants.items():
            if not name or name in (".", "..") or "/" in name or "\\" in name:  # it names the cells' folders
                raise ValueError(f"select.variants: {name!r} is not a folder name (no '/', '\\', '.' or '..')")
            bad = [k for k in opts if k.split(".")[0] not in ("td", "train") or "." not in k]
            if bad:
                raise ValueError(f"select.variants.{name}: {bad} are not td.<key> / train.<key> options")
            if any(k in ("td.method", "train.seed") for k in opts):
                raise ValueError(f"select.variants.{name}: td.method and train.seed are not options to choose")
        return variants


def _set_dotted(data: dict, key: str, value: Any) -> dict:
    head, _, rest = key.partition(".")
    if not rest:
        return {**data, head: value}
    inner = data.get(head)
    return {**data, head: _set_dotted(inner if isinstance(inner, dict) else {}, rest, value)}


def with_variant(ft: FinetuneConfig, options: dict[str, Any]) -> FinetuneConfig:
    """`ft` with a selection variant's td. / train. options set, validated like the rest of the config."""
    data = ft.model_dump(mode="json")
    for key, value in options.items():
        data = _set_dotted(data, key, value)
    return FinetuneConfig.model_validate(data)


class ProtocolConfig(TDRunSettings):
    """The shared sections (world, student, teacher, td, batch sizes, train, out) are every cell's; td's naive /
    baseline cells derive from its CLIP-TD settings, and train.seed defaults to each cell's seed."""

    tasks: list[TaskConfig]
    fractions: list[float] = [0.01, 0.05, 0.1, 0.25]
    seeds: list[int] = [0, 1, 2]
    full: bool = True
    methods: list[Method] = ["baseline", "naive", "clip_td"]
    teacher: TDTeacher  # every sweep distils (naive, clip_td), so the teacher is required here
    keep_checkpoints: bool = True  # false: a finished cell's checkpoints/ go (not part of a cell's identity)
    budget: Budget | None = None  # step budget, warmup share and body / head lr of every cell; none: `train` as is
    select: Select | None = None  # options chosen on each task's dev carve before the method's cells run

    @field_validator("teacher")
    @classmethod
    def _has_teacher(cls, teacher: TDTeacher) -> TDTeacher:
        if teacher.spec is None:
            raise ValueError("a protocol distils (naive, clip_td): name the teacher, teacher: {models: [SPEC]}")
        return teacher

    @field_validator("tasks")
    @classmethod
    def _unique_names(cls, tasks: list[TaskConfig]) -> list[TaskConfig]:
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique (they name the cell folders), got {names}")
        return tasks

    @model_validator(mode="after")
    def _budget_and_selection_fit(self) -> ProtocolConfig:
        if self.budget is not None:
            if self.train.steps is not None:
                raise ValueError("budget.steps sets each cell's length: leave train.steps unset")
            if self.budget.body_lr_scale != 1.0 and "student" in self.train.lr_scale:
                raise ValueError("budget.body_lr_scale and train.lr_scale.student both set the student's lr: "
                                 "use one")
            if isinstance(self.budget.steps, dict):
                missing = [f for f in run_fractions(self) if f not in self.budget.steps]
                if missing:
                    raise ValueError(f"budget.steps has no budget for fractions {missing} (it has "
                                     f"{sorted(self.budget.steps)})")
        if self.select is not None:
            absent = [m for m in self.select.methods if m not in self.methods]
            if absent:
                raise ValueError(f"select.methods {absent} must be among the protocol's trained methods "
                                 f"{[m for m in self.methods if m != 'prior']}")
            no_dev = [t.name for t in self.tasks if not t.dev_fraction]
            if no_dev:
                raise ValueError(f"select chooses options on each task's dev carve, and tasks {no_dev} have none: "
                                 "set their dev_fraction (never chosen on val)")
            fraction, seed = run_fractions(self)[0], self.selection_seeds()[0]
            for method in self.select.methods:  # a misspelt option fails before any cell runs, for every method
                base = _cell(self, self.tasks[0], fraction, seed, method)
                for name, options in self.select.variants.items():
                    try:
                        with_variant(base, options)
                    except ValidationError as e:
                        errors = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
                        raise ValueError(f"select.variants.{name} ({method}): {errors}") from None
        return self

    def selection_seeds(self) -> list[int]:
        return self.select.seeds if self.select and self.select.seeds else self.seeds[:1]


def run_fractions(cfg: ProtocolConfig) -> list[float]:
    return [*cfg.fractions, *([1.0] if cfg.full and 1.0 not in cfg.fractions else [])]


def _cell(cfg: ProtocolConfig, task: TaskConfig, fraction: float, seed: int, method: str) -> FinetuneConfig:
    # a prior cell trains nothing: the budget is no part of what it computes (nor of its identity)
    train = cfg.train if cfg.budget is None or method == "prior" else cfg.budget.train_for(cfg.train, fraction)
    return FinetuneConfig(**{**shared_settings(cfg), "td": cfg.td.model_copy(update={"method": method}),
                             "train": train}, task=task, fraction=fraction, seed=seed)


def selection_rel(cfg: ProtocolConfig, task: str, fraction: float, seed: int, method: str, variant: str) -> str:
    """A selection cell's path relative to out. With one selected method it is `select/<task>/f<f>-s<seed>/
    <variant>`, the layout protocols selecting one method have always written (so their cells are reused); with
    several, each method's variants sit in its own folder, `select/<task>/f<f>-s<seed>/<method>/<variant>`."""
    per_method = f"{method}/" if cfg.select is not None and len(cfg.select.methods) > 1 else ""
    return f"select/{task}/f{fraction:g}-s{seed}/{per_method}{variant}"


def selection_cells(cfg: ProtocolConfig) -> list[tuple[str, str, FinetuneConfig]]:
    """(cell path relative to out, variant name, its FinetuneConfig) of every selection cell: scored on the dev
    carve only. The cell's method is its config's `td.method`."""
    if cfg.select is None:
        return []
    cells = []
    for task in cfg.tasks:
        for fraction in run_fractions(cfg):
            for seed in cfg.selection_seeds():
                for method in cfg.select.methods:
                    for name, options in cfg.select.variants.items():
                        ft = with_variant(_cell(cfg, task, fraction, seed, method), options)
                        cells.append((selection_rel(cfg, task.name, fraction, seed, method, name), name, ft))
    return cells


Choices = dict[str, dict[str, dict[str, str]]]  # {method: {task: {fraction: chosen variant}}}


def selection_record(choices: Choices, leaves: Callable[[str, str, str], dict[str, Any]]) -> dict[str, Any]:
    """selection.json's content: {task: {fraction: leaf}} when one method was selected (the file's first shape,
    which protocols selecting one method keep writing), {method: {task: {fraction: leaf}}} for several. A leaf
    is `leaves(method, task, fraction)`: {"chosen", "method", "metric", "seeds", "train_dev"}."""
    record = {m: {t: {f: leaves(m, t, f) for f in by_f} for t, by_f in by_task.items()}
              for m, by_task in choices.items()}
    return next(iter(record.values())) if len(record) == 1 else record


def read_choices(out: Path, methods: list[str]) -> Choices | None:
    """{method: {task: {fraction: chosen variant}}} of a protocol's selection.json for the selected `methods`, or
    None before the selection ran. A file of the one-method shape is that method's, when `methods` is that one
    method (a file written before leaves named their method is taken as the selected method's, as it was
    written); a file that fits neither shape is None: the protocol reruns the selection (its finished cells
    are reused) and rewrites it."""
    path = out / "selection.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if _is_choice_level(record):
            if len(methods) != 1 or any(leaf.get("method", methods[0]) != methods[0]
                                        for by_f in record.values() for leaf in by_f.values()):
                return None
            record = {methods[0]: record}
        elif not all(_is_choice_level(by_task) for by_task in record.values()):
            return None
        return {m: {t: {f: leaf["chosen"] for f, leaf in by_f.items()} for t, by_f in by_task.items()}
                for m, by_task in record.items() if m in methods}
    except (ValueError, AttributeError, TypeError, KeyError):  # not JSON, or not a selection record
        return None


def _is_choice_level(record: Any) -> bool:
    """Whether `record` is {task: {fraction: {"chosen": ...}}} (a fraction is never the key "chosen", so the
    one-method and the per-method shapes cannot be taken for each other)."""
    return isinstance(record, dict) and bool(record) and all(
        isinstance(by_f, dict) and by_f and all(isinstance(leaf, dict) and "chosen" in leaf for leaf in by_f.values())
        for by_f in record.values())


def cell_configs(cfg: ProtocolConfig, choices: Choices | None = None) -> list[tuple[str, FinetuneConfig]]:
    """(cell path relative to out, its FinetuneConfig) for every cell, in run order. With `select`, each selected
    method's cells take the variant `choices` names for that method, task and fraction (read from
    OUT/selection.json when not given; before the selection ran they are listed with the config's own
    options)."""
    if cfg.select is not None and choices is None and cfg.out is not None:
        choices = read_choices(Path(cfg.out), cfg.select.methods)
    cells = []
    for task in cfg.tasks:
        for fraction in run_fractions(cfg):
            for seed in cfg.seeds:
                for method in cfg.methods:
                    ft = _cell(cfg, task, fraction, seed, method)
                    chosen = (choices or {}).get(method, {}).get(task.name, {}).get(f"{fraction:g}")
                    # a stale selection.json (variants renamed since) names none of them: the config's options
                    if cfg.select is not None and method in cfg.select.methods and chosen in cfg.select.variants:
                        ft = with_variant(ft, cfg.select.variants[chosen])
                    cells.append((f"cells/{task.name}/f{fraction:g}-s{seed}/{method}", ft))
    return cells


PROXY_OPTIONS = ("vqa_candidates", "vqa_distractors", "null_prompt")  # td options read only with a teacher


def _identity(config: dict, distils: bool) -> dict:
    """What a finished cell's result depends on. A cell that never loads the teacher (prior, baseline) stays
    valid under another teacher or teacher feature store, so comparing teachers reuses those cells."""
    if distils:
        return config
    task = {k: v for k, v in config.get("task", {}).items() if k != "teacher_features"}
    out = {**{k: v for k, v in config.items() if k != "teacher"}, "task": task}
    if isinstance(config.get("td"), dict):  # nor do the options only the teacher's confidence proxy reads
        out["td"] = {k: v for k, v in config["td"].items() if k not in PROXY_OPTIONS}
    return out


def _with_new_defaults(recorded: dict, model: type[BaseModel] = FinetuneConfig) -> dict:
    """A finished cell's config with the options added since it ran filled in at their defaults (which is how
    it ran; where it is not, at the kind's `recorded_td_defaults`), nested sections too; keys that are no longer
    options stay, so the comparison names them."""
    out = dict(recorded)
    if model is FinetuneConfig and "teacher" in out:
        out["teacher"] = teacher_section(out["teacher"])  # cells recorded with the old `teacher: SPEC` spelling
    kind_name = out["task"].get("kind") if isinstance(out.get("task"), dict) else None
    kind = TASK_KINDS.get(kind_name) if isinstance(kind_name, str) else None
    if model is FinetuneConfig and kind is not None and isinstance(out.get("td"), dict):
        out["td"] = {**kind.recorded_td_defaults(), **out["td"]}  # e.g. VQA's candidates before td.vqa_candidates
    if model is FinetuneConfig and isinstance(out.get("train"), dict) and "seed" not in out["train"]:
        out["train"] = {**out["train"], "seed": out.get("seed", 0)}  # the loop always ran with the cell's seed
    for name, field in model.model_fields.items():
        sub = field.annotation
        if name not in out and not field.is_required():
            out[name] = to_jsonable_python(field.get_default(call_default_factory=True))
        elif isinstance(out.get(name), dict) and isinstance(sub, type) and issubclass(sub, BaseModel):
            out[name] = _with_new_defaults(out[name], sub)
    return {k: v for k, v in out.items() if model is not FinetuneConfig or k not in LOCATION_FIELDS}


def _check_same(recorded: dict, current: dict, where: str, prefix: str = "") -> None:
    for key in sorted(set(recorded) | set(current)):
        a, b = recorded.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            _check_same(a, b, where, f"{prefix}{key}.")
        elif a != b:
            raise ManifestMismatch(f"{where} was run with {prefix}{key}={a!r}, the config now says {b!r}; "
                                   "use another `out` folder or delete that cell")


def run_protocol(cfg: ProtocolConfig, trainer: Trainer | None = None, train_config: Any = None,
                 progress: Callable[[str], None] = print) -> dict[str, Any]:
    if cfg.out is None:
        raise ConfigError("protocol: no output folder: pass --out DIR (or set `out:` in the config)")
    out = Path(cfg.out)
    reader = TaskReader(progress)
    # every split of every task opened (and hashed) up front: a bad folder or split name fails before training
    data_sha = {t.name: reader.data_sha256(t, cfg.world) for t in cfg.tasks}
    check_student(cfg.student)  # and a bad hf: student folder
    floors: dict[tuple, tuple[int, dict]] = {}

    def floor(ft: FinetuneConfig) -> tuple[int, dict[str, dict[str, float]]]:
        """(training-set size, answer-prior metrics per split) of a cell's subset; one fit per task x fraction x
        seed, shared by its methods."""
        key = (ft.task.name, ft.fraction, ft.seed)
        if key not in floors:
            train_data, evals, train_ex = cell_data(ft, reader)
            floors[key] = (len(train_ex), prior_metrics(ft.task.kind, train_ex, train_data.meta, evals))
        return floors[key]

    def run_cell(rel: str, ft: FinetuneConfig, only: tuple[str, ...] | None = None) -> dict[str, Any]:
        cell = out / rel
        result_path = cell / "result.json"
        current = ft.model_dump(mode="json", exclude=LOCATION_FIELDS)
        if result_path.is_file():
            done = json.loads(result_path.read_text())
            recorded = _with_new_defaults(done["config"])
            _check_same(_identity(recorded, ft.td.distils), _identity(current, ft.td.distils), str(cell))
            if done.get("data_sha256") != data_sha[ft.task.name]:
                raise ManifestMismatch(f"{cell} was run on other {ft.task.name} data (annotation files differ); "
                                       "use another `out` folder or delete that cell")
            progress(f"skip (done) {rel}")
        else:
            progress(f"run {rel}")
            metrics = run_finetune(ft, cell, trainer=trainer, train_config=train_config, reader=reader, log=progress,
                                   only=only)
            n_train, prior = floor(ft)
            done = {"config": current, "data_sha256": data_sha[ft.task.name], "metrics": metrics,
                    "train_examples": n_train, "minus_prior": minus_prior(metrics, prior)}
            atomic_write_text(result_path, json.dumps(done, indent=2))
        if not cfg.keep_checkpoints:  # only after result.json: a cell killed before it still resumes
            shutil.rmtree(cell / CKPT_DIR, ignore_errors=True)
        bar.advance()
        return done

    selecting = selection_cells(cfg)
    # plain lines even on a terminal: each cell's training draws its own bar, and rich allows one at a time
    bar = StageProgress("protocol", len(selecting) + len(cell_configs(cfg, {})), unit="cells", tty=False)
    choices: Choices | None = None
    if cfg.select is not None:
        # {method: {(task, fraction): {variant: dev scores}}}: each method's choice reads its own cells alone
        dev: dict[str, dict[tuple[str, str], dict[str, list[float]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(list)))
        for rel, name, ft in selecting:  # scored on the dev carve alone: val and shift splits are not evaluated
            done = run_cell(rel, ft, only=("train_dev",))
            metric = task_kind(ft.task.kind).main_metric
            dev[ft.td.method][(ft.task.name, f"{ft.fraction:g}")][name].append(done["metrics"]["train_dev"][metric])
        choices = {m: choose(dev[m]) for m in cfg.select.methods}
        kinds = {t.name: t.kind for t in cfg.tasks}

        def leaf(m: str, task: str, f: str) -> dict[str, Any]:
            scores = {n: statistics.fmean(v) for n, v in dev[m][(task, f)].items()}
            return {"chosen": choices[m][task][f], "method": m, "seeds": cfg.selection_seeds(),
                    "metric": f"train_dev {task_kind(kinds[task]).main_metric}", "train_dev": scores}

        record = selection_record(choices, leaf)
        atomic_write_text(out / "selection.json", json.dumps(record, indent=2))
    rows: list[dict[str, Any]] = []
    extra: dict[tuple, dict[str, float]] = {}
    for rel, ft in cell_configs(cfg, choices):
        done = run_cell(rel, ft)
        new_rows = cell_rows(ft, done["metrics"])
        n_train, prior = floor(ft)  # a cell finished before these fields existed gets them here
        below = minus_prior(done["metrics"], prior)
        for r in new_rows:
            split = "val" if r["regime"] in ("low_shot", "full") else r["regime"]
            extra[_row_key(r)] = {"n_train": n_train, "minus_prior": below[split][r["metric"]]}
        rows += new_rows
    bar.close()
    atomic_write_text(out / "rows.json", json.dumps(rows, indent=2))
    table = summarise(rows, extra)
    if choices is not None:
        mark_chosen(table, choices)
    atomic_write_text(out / "results.json", json.dumps(table, indent=2))
    chosen_md = chosen_markdown(cfg.select.variants, choices) if cfg.select is not None and choices else ""
    atomic_write_text(out / "results.md", to_markdown(table) + chosen_md)
    atomic_write_text(out / "results.csv", to_csv(table))
    summary = {"gain_points": gain_points(table, {t.name: t.kind for t in cfg.tasks}),
               "table": str(out / "results.md")}
    if choices is not None:
        summary["selection"] = str(out / "selection.json")
        summary["chosen"] = choices
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return {"rows": rows, "table": table, "summary": summary, "choices": choices}


def choose(dev: dict[tuple[str, str], dict[str, list[float]]]) -> dict[str, dict[str, str]]:
    """{task: {fraction: variant}} with the highest mean dev-carve score (the first listed on a tie). Takes the
    dev-carve scores alone: nothing else can sway the choice."""
    choices: dict[str, dict[str, str]] = defaultdict(dict)
    for (task, fraction), scores in dev.items():
        means = {name: statistics.fmean(v) for name, v in scores.items()}
        choices[task][fraction] = max(means, key=means.__getitem__)
    return dict(choices)


def mark_chosen(table: list[dict[str, Any]], choices: Choices) -> None:
    """Gives each table entry of a selected method the variant its cells ran with (`chosen`), every regime of
    the fraction's models (low-shot or full, and the shift splits) included."""
    for e in table:
        chosen = choices.get(e["method"], {}).get(e["task"], {}).get(f"{e['fraction']:g}")
        if chosen is not None:
            e["chosen"] = chosen


def chosen_markdown(variants: dict[str, dict[str, Any]], choices: Choices) -> str:
    """The results.md section that says which variant (and its options) each selected method's cells ran with."""
    lines = ["", "Options chosen on each task's dev carve (selection.json; methods not listed ran with the config's "
             "own options):", "", "| task | fraction | method | chosen | options |", "| --- | --- | --- | --- | --- |"]
    for method, by_task in choices.items():
        for task, by_f in by_task.items():
            for fraction, name in by_f.items():
                options = ", ".join(f"{k}={v}" for k, v in variants[name].items()) or "the config's"
                lines.append(f"| {task} | {fraction} | {method} | {name} | {options} |")
    return "\n".join(lines) + "\n"


def minus_prior(metrics: dict[str, dict[str, float]], prior: dict[str, dict[str, float]]
                ) -> dict[str, dict[str, float]]:
    """{split: {metric: score - the answer prior's score}} (points), for every split both scored."""
    return {split: {m: v - prior[split][m] for m, v in values.items() if m != "n" and m in prior.get(split, {})}
            for split, values in metrics.items() if split in prior}


def _row_key(r: dict[str, Any]) -> tuple:
    return (r["task"], r["regime"], r["fraction"], r["method"], r["seed"], r["metric"])


def cell_rows(ft: FinetuneConfig, metrics: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    rows = []
    for split, values in metrics.items():
        if split == "val":
            regime = "full" if ft.fraction >= 1.0 else "low_shot"
        else:
            regime = split  # shift:NAME, from the model of this fraction (the row's `fraction`)
        for metric, value in values.items():
            if metric != "n":
                rows.append({"task": ft.task.name, "kind": ft.task.kind, "regime": regime, "fraction": ft.fraction,
                             "method": ft.td.method, "seed": ft.seed, "metric": metric, "value": value})
    return rows


def summarise(rows: list[dict[str, Any]], extra: dict[tuple, dict[str, float]] | None = None
              ) -> list[dict[str, Any]]:
    """Mean +- std over seeds per (task, regime, fraction, metric, method), with gains over the baseline; with
    `extra` ({row key: {"n_train", "minus_prior"}}) also the training-set size and the mean score minus the
    answer prior of the same subsets."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    more: dict[tuple, list[dict[str, float]]] = defaultdict(list)
    for r in rows:
        key = (r["task"], r["regime"], r["fraction"], r["metric"], r["method"])
        groups[key].append(r["value"])
        if extra and _row_key(r) in extra:
            more[key].append(extra[_row_key(r)])
    table = []
    for (task, regime, fraction, metric, method), vals in sorted(groups.items()):
        base = groups.get((task, regime, fraction, metric, "baseline"))
        mean = statistics.fmean(vals)
        entry = {"task": task, "regime": regime, "fraction": fraction, "metric": metric, "method": method,
                 "mean": mean, "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n_seeds": len(vals)}
        got = more.get((task, regime, fraction, metric, method))
        if got:  # subsets of one fraction have one size for every seed (stratified draws of round(f x N))
            sizes = sorted({e["n_train"] for e in got})
            entry["n_train"] = sizes[0] if len(sizes) == 1 else sizes
            entry["minus_prior"] = statistics.fmean(e["minus_prior"] for e in got)
        if base:
            b = statistics.fmean(base)
            entry["gain_abs"] = mean - b
            entry["gain_rel_pct"] = 100 * (mean - b) / b if b else None
        table.append(entry)
    return table


def gain_points(table: list[dict[str, Any]], kinds: dict[str, str]) -> dict[str, float]:
    """{"<task> <regime> f<fraction>": CLIP-TD mean - baseline mean} on each task's main metric (in points:
    the metrics are percentages); empty unless both methods ran."""
    return {f"{e['task']} {e['regime']} f{e['fraction']:g}": round(e["gain_abs"], 4) for e in table
            if e["method"] == "clip_td" and "gain_abs" in e and e["metric"] == task_kind(kinds[e["task"]]).main_metric}


def to_markdown(table: list[dict[str, Any]]) -> str:
    lines = ["| task | regime | fraction | metric | method | train n | mean +- std | seeds | - prior | gain (abs) | "
             "gain (rel %) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in table:
        rel = e.get("gain_rel_pct")
        below = e.get("minus_prior")
        lines.append(f"| {e['task']} | {e['regime']} | {e['fraction']:g} | {e['metric']} | {e['method']} | "
                     f"{_size(e.get('n_train'))} | {e['mean']:.2f} +- {e['std']:.2f} | {e['n_seeds']} | "
                     f"{'n/a' if below is None else f'{below:+.2f}'} | {e.get('gain_abs', 0.0):+.2f} | "
                     f"{'n/a' if rel is None else f'{rel:+.1f}'} |")
    return "\n".join(lines) + "\n"


def _size(n: int | list[int] | None) -> str:
    return "n/a" if n is None else "/".join(map(str, n)) if isinstance(n, list) else str(n)


CSV_COLUMNS = ["task", "regime", "fraction", "n_train", "metric", "method", "mean", "std", "n_seeds", "minus_prior",
               "gain_abs", "gain_rel_pct", "chosen"]


def to_csv(table: list[dict[str, Any]]) -> str:
    """The summary table as CSV (one row per table entry; an empty field where a value does not apply)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for e in table:
        writer.writerow({**e, "n_train": _size(e["n_train"]) if "n_train" in e else "",
                         "gain_rel_pct": "" if e.get("gain_rel_pct") is None else e["gain_rel_pct"]})
    return buf.getvalue()
