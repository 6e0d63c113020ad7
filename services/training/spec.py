"""What a training job asks for, as plain dataclasses, with the checks that need no data.

A `JobSpec` is what the servicer builds from a request and what the job store keeps as
JSON (`spec_to_dict` / `spec_from_dict`), so a restarted service trains exactly what was
submitted. `spec_violations` finds every problem a spec has on its own (epochs, learning
rate, search space, names); checks against the dataset and the model's shapes live in
`services.training.models`. Field names in violations are the request's field paths."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from shared.errors import FieldViolation
from shared.names import check_name

OPTIMIZERS = ("adam", "sgd", "rmsprop")
EARLY_STOPPING_MONITORS = ("val_loss", "val_accuracy")
DEFAULT_LEARNING_RATE = 1e-3
DEFAULT_BATCH_SIZE = 32
DEFAULT_EPOCHS_PER_TRIAL = 3
MAX_EPOCHS = 10_000
MAX_TRIALS = 1_000
MAX_BATCH_SIZE = 65_536
# Processes of one data-parallel training, all started by the worker that claims it.
MAX_WORKERS = 16


@dataclass(frozen=True)
class MlpTemplate:
    hidden_units: tuple[int, ...] = (128, 64)
    dropout: float = 0.0


@dataclass(frozen=True)
class CnnTemplate:
    filters: tuple[int, ...] = (16, 32)
    dense_units: int = 64
    dropout: float = 0.0


@dataclass(frozen=True)
class KerasJsonModel:
    json: str


ModelSource = MlpTemplate | CnnTemplate | KerasJsonModel


@dataclass(frozen=True)
class EarlyStopping:
    monitor: str = "val_loss"
    patience: int = 3
    min_delta: float = 0.0


@dataclass(frozen=True)
class Hyperparameters:
    epochs: int
    optimizer: str = "adam"
    learning_rate: float = DEFAULT_LEARNING_RATE
    batch_size: int = DEFAULT_BATCH_SIZE
    early_stopping: EarlyStopping | None = None


@dataclass(frozen=True)
class SearchParameter:
    name: str
    kind: Literal["float", "int", "choice"]
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class SearchSpace:
    parameters: tuple[SearchParameter, ...]
    max_trials: int
    epochs_per_trial: int = DEFAULT_EPOCHS_PER_TRIAL
    # Optuna's pruner of trials that fall behind: "none", "median" or "hyperband".
    pruner: Literal["none", "median", "hyperband"] = "none"


@dataclass(frozen=True)
class JobSpec:
    dataset_version: str
    model: ModelSource
    hyperparameters: Hyperparameters
    search: SearchSpace | None = None
    model_name: str = ""
    request_promotion: bool = False
    export_tflite: bool = False
    seed: int = 0
    # Processes of a data-parallel training (MultiWorkerMirroredStrategy); 1: one.
    workers: int = 1

    @property
    def model_kind(self) -> str:
        return {MlpTemplate: "mlp", CnnTemplate: "cnn", KerasJsonModel: "keras_json"}[
            type(self.model)
        ]


# Searched names and the kind of domain each accepts.
SEARCHABLE: dict[str, tuple[str, ...]] = {
    "learning_rate": ("float",),
    "dropout": ("float",),
    "batch_size": ("int",),
    "optimizer": ("choice",),
    "hidden_units": ("choice",),
}


def parse_units(text: str) -> tuple[int, ...]:
    """`"128,64"` -> (128, 64); raises ValueError on anything else."""
    units = tuple(int(part) for part in text.split(","))
    if not units or any(unit <= 0 for unit in units):
        raise ValueError(f"units must be positive integers, got {text!r}")
    return units


def _template_violations(model: ModelSource) -> list[FieldViolation]:
    problems = []
    if isinstance(model, MlpTemplate):
        prefix = "spec.model.mlp"
        units = model.hidden_units
    elif isinstance(model, CnnTemplate):
        prefix = "spec.model.cnn"
        units = model.filters
        if model.dense_units <= 0:
            problems.append(FieldViolation(f"{prefix}.dense_units", "must be > 0"))
    else:
        if not model.json.strip():
            problems.append(FieldViolation("spec.model.keras_json", "must not be empty"))
        return problems
    if any(unit <= 0 for unit in units):
        name = "hidden_units" if isinstance(model, MlpTemplate) else "filters"
        problems.append(FieldViolation(f"{prefix}.{name}", f"must all be > 0, got {list(units)}"))
    if not 0.0 <= model.dropout < 1.0:
        problems.append(FieldViolation(f"{prefix}.dropout", "must be in [0, 1)"))
    return problems


def _hyperparameter_violations(hp: Hyperparameters) -> list[FieldViolation]:
    prefix = "spec.hyperparameters"
    problems = []
    if not 0 < hp.epochs <= MAX_EPOCHS:
        problems.append(FieldViolation(f"{prefix}.epochs", f"must be in 1..{MAX_EPOCHS}"))
    if not (math.isfinite(hp.learning_rate) and hp.learning_rate > 0):
        problems.append(FieldViolation(f"{prefix}.learning_rate", "must be a finite number > 0"))
    if not 0 < hp.batch_size <= MAX_BATCH_SIZE:
        problems.append(FieldViolation(f"{prefix}.batch_size", f"must be in 1..{MAX_BATCH_SIZE}"))
    if hp.optimizer not in OPTIMIZERS:
        problems.append(FieldViolation(f"{prefix}.optimizer", f"must be one of {OPTIMIZERS}"))
    if hp.early_stopping is not None:
        stopping = hp.early_stopping
        if stopping.monitor not in EARLY_STOPPING_MONITORS:
            problems.append(
                FieldViolation(
                    f"{prefix}.early_stopping.monitor",
                    f"must be one of {EARLY_STOPPING_MONITORS}",
                )
            )
        if stopping.patience <= 0:
            problems.append(FieldViolation(f"{prefix}.early_stopping.patience", "must be > 0"))
        if stopping.min_delta < 0:
            problems.append(FieldViolation(f"{prefix}.early_stopping.min_delta", "must be >= 0"))
    return problems


def _parameter_violations(
    index: int, parameter: SearchParameter, model: ModelSource
) -> list[FieldViolation]:
    prefix = f"spec.search.parameters[{index}]"
    if parameter.name not in SEARCHABLE:
        known = ", ".join(SEARCHABLE)
        return [FieldViolation(f"{prefix}.name", f"unknown parameter; known: {known}")]
    if parameter.kind not in SEARCHABLE[parameter.name]:
        expected = SEARCHABLE[parameter.name][0]
        return [FieldViolation(prefix, f"{parameter.name} needs a {expected} domain")]
    if parameter.kind == "choice":
        return _choice_violations(prefix, parameter, model)
    if parameter.name == "dropout" and isinstance(model, KerasJsonModel):
        return [FieldViolation(f"{prefix}.name", "dropout is searchable for mlp and cnn only")]
    problems = []
    if not (math.isfinite(parameter.low) and math.isfinite(parameter.high)):
        problems.append(FieldViolation(prefix, "bounds must be finite"))
    elif parameter.low > parameter.high:
        problems.append(FieldViolation(prefix, "low must be <= high"))
    elif parameter.log and parameter.low <= 0:
        problems.append(FieldViolation(prefix, "a log domain needs low > 0"))
    lowest_allowed = {"learning_rate": 0.0, "dropout": 0.0, "batch_size": 1.0}[parameter.name]
    if parameter.low < lowest_allowed or (parameter.name == "learning_rate" and parameter.low == 0):
        problems.append(FieldViolation(f"{prefix}.low", f"too small for {parameter.name}"))
    if parameter.name == "dropout" and parameter.high >= 1.0:
        problems.append(FieldViolation(f"{prefix}.high", "dropout must stay below 1"))
    return problems


def _choice_violations(
    prefix: str, parameter: SearchParameter, model: ModelSource
) -> list[FieldViolation]:
    if not parameter.choices:
        return [FieldViolation(f"{prefix}.choice.values", "must not be empty")]
    if parameter.name == "optimizer":
        unknown = [value for value in parameter.choices if value not in OPTIMIZERS]
        if unknown:
            return [FieldViolation(f"{prefix}.choice.values", f"unknown optimizers {unknown}")]
        return []
    if not isinstance(model, MlpTemplate):
        return [FieldViolation(f"{prefix}.name", "hidden_units is searchable for mlp only")]
    for value in parameter.choices:
        try:
            parse_units(value)
        except ValueError:
            return [
                FieldViolation(
                    f"{prefix}.choice.values", f"{value!r} is not a comma-separated unit list"
                )
            ]
    return []


def _search_violations(search: SearchSpace, model: ModelSource) -> list[FieldViolation]:
    problems = []
    if not 0 < search.max_trials <= MAX_TRIALS:
        problems.append(FieldViolation("spec.search.max_trials", f"must be in 1..{MAX_TRIALS}"))
    if not 0 < search.epochs_per_trial <= MAX_EPOCHS:
        problems.append(FieldViolation("spec.search.epochs_per_trial", "must be > 0"))
    if not search.parameters:
        problems.append(FieldViolation("spec.search.parameters", "must not be empty"))
    names = [parameter.name for parameter in search.parameters]
    for name in {name for name in names if names.count(name) > 1}:
        problems.append(FieldViolation("spec.search.parameters", f"{name} appears twice"))
    for index, parameter in enumerate(search.parameters):
        problems.extend(_parameter_violations(index, parameter, model))
    return problems


def spec_violations(spec: JobSpec) -> list[FieldViolation]:
    """Every problem `spec` has on its own, before looking at data or building a model."""
    problems = []
    if not spec.dataset_version:
        problems.append(FieldViolation("spec.dataset_version", "must not be empty"))
    if spec.model_name and (violation := check_name("spec.model_name", spec.model_name)):
        problems.append(violation)
    if spec.request_promotion and not spec.model_name:
        problems.append(
            FieldViolation("spec.request_promotion", "needs spec.model_name to register in")
        )
    problems.extend(_template_violations(spec.model))
    problems.extend(_hyperparameter_violations(spec.hyperparameters))
    if spec.search is not None:
        problems.extend(_search_violations(spec.search, spec.model))
    problems.extend(_workers_violations(spec))
    return problems


def _workers_violations(spec: JobSpec) -> list[FieldViolation]:
    if not 0 < spec.workers <= MAX_WORKERS:
        return [FieldViolation("spec.workers", f"must be in 1..{MAX_WORKERS}")]
    if spec.workers == 1:
        return []
    problems = []
    if spec.search is not None:
        problems.append(
            FieldViolation(
                "spec.workers",
                "a search's trials already run in parallel across the fleet; "
                "use workers > 1 without a search",
            )
        )
    if spec.hyperparameters.early_stopping is not None:
        problems.append(
            FieldViolation("spec.workers", "a multi-worker training runs all its epochs")
        )
    return problems


def spec_to_dict(spec: JobSpec) -> dict[str, Any]:
    data = asdict(spec)
    data["model"] = {"kind": spec.model_kind, **asdict(spec.model)}
    return data


def spec_from_dict(data: dict[str, Any]) -> JobSpec:
    model_data = dict(data["model"])
    kind = model_data.pop("kind")
    model: ModelSource
    if kind == "mlp":
        model = MlpTemplate(tuple(model_data["hidden_units"]), model_data["dropout"])
    elif kind == "cnn":
        model = CnnTemplate(
            tuple(model_data["filters"]), model_data["dense_units"], model_data["dropout"]
        )
    else:
        model = KerasJsonModel(model_data["json"])
    hp_data = dict(data["hyperparameters"])
    stopping = hp_data.pop("early_stopping")
    hyperparameters = Hyperparameters(
        **hp_data, early_stopping=EarlyStopping(**stopping) if stopping else None
    )
    search = None
    if data["search"] is not None:
        search = SearchSpace(
            parameters=tuple(
                SearchParameter(**{**parameter, "choices": tuple(parameter["choices"])})
                for parameter in data["search"]["parameters"]
            ),
            max_trials=data["search"]["max_trials"],
            epochs_per_trial=data["search"]["epochs_per_trial"],
            # Jobs stored before pruning existed searched without it.
            pruner=data["search"].get("pruner", "none"),
        )
    return JobSpec(
        dataset_version=data["dataset_version"],
        model=model,
        hyperparameters=hyperparameters,
        search=search,
        model_name=data["model_name"],
        request_promotion=data["request_promotion"],
        export_tflite=data["export_tflite"],
        seed=data["seed"],
        # Jobs stored before multi-worker jobs existed trained in one process.
        workers=data.get("workers", 1),
    )


@dataclass(frozen=True)
class TrialParams:
    """The hyperparameters one training run uses: the spec's, overridden by a trial's."""

    optimizer: str
    learning_rate: float
    batch_size: int
    dropout: float | None
    hidden_units: tuple[int, ...] | None

    def as_strings(self) -> dict[str, str]:
        values = {
            "optimizer": self.optimizer,
            "learning_rate": repr(self.learning_rate),
            "batch_size": str(self.batch_size),
        }
        if self.dropout is not None:
            values["dropout"] = repr(self.dropout)
        if self.hidden_units is not None:
            values["hidden_units"] = ",".join(str(unit) for unit in self.hidden_units)
        return values


def base_params(spec: JobSpec) -> TrialParams:
    hp = spec.hyperparameters
    model = spec.model
    dropout = model.dropout if isinstance(model, MlpTemplate | CnnTemplate) else None
    units = model.hidden_units if isinstance(model, MlpTemplate) else None
    return TrialParams(hp.optimizer, hp.learning_rate, hp.batch_size, dropout, units)


def params_with(base: TrialParams, sampled: dict[str, Any]) -> TrialParams:
    """`base` with the searched values of a trial put in."""
    return TrialParams(
        optimizer=str(sampled.get("optimizer", base.optimizer)),
        learning_rate=float(sampled.get("learning_rate", base.learning_rate)),
        batch_size=int(sampled.get("batch_size", base.batch_size)),
        dropout=float(sampled["dropout"]) if "dropout" in sampled else base.dropout,
        hidden_units=(
            parse_units(str(sampled["hidden_units"]))
            if "hidden_units" in sampled
            else base.hidden_units
        ),
    )
