"""`tfmesh.training.v1` messages to and from the service's own types (spec, job, event).

Unset proto fields take the documented defaults here (optimizer Adam, learning rate 0.001,
batch size 32, mlp [128, 64]), so the core only ever sees complete specs; values that
are set but wrong (a negative learning rate, epochs <= 0) are kept as they are for the
core's validation to name."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from google.protobuf import timestamp_pb2

from services.training.jobs import EventKind, JobEvent, JobRecord, JobState
from services.training.spec import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS_PER_TRIAL,
    DEFAULT_LEARNING_RATE,
    CnnTemplate,
    EarlyStopping,
    Hyperparameters,
    JobSpec,
    KerasJsonModel,
    MlpTemplate,
    ModelSource,
    SearchParameter,
    SearchSpace,
)
from shared.errors import invalid
from tfmesh.training.v1 import training_pb2 as pb

_OPTIMIZERS = {
    pb.OPTIMIZER_UNSPECIFIED: "adam",
    pb.OPTIMIZER_ADAM: "adam",
    pb.OPTIMIZER_SGD: "sgd",
    pb.OPTIMIZER_RMSPROP: "rmsprop",
}
_OPTIMIZER_ENUMS = {
    "adam": pb.OPTIMIZER_ADAM,
    "sgd": pb.OPTIMIZER_SGD,
    "rmsprop": pb.OPTIMIZER_RMSPROP,
}
_STATES = {
    JobState.QUEUED: pb.JOB_STATE_QUEUED,
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: pb.JOB_STATE_SUCCEEDED,
    JobState.FAILED: pb.JOB_STATE_FAILED,
    JobState.CANCELLED: pb.JOB_STATE_CANCELLED,
}
_STATES_BY_ENUM = {enum: state for state, enum in _STATES.items()}


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def model_from_proto(model: pb.ModelSpec) -> ModelSource:
    source = model.WhichOneof("source")
    if source == "cnn":
        return CnnTemplate(
            filters=tuple(model.cnn.filters) or CnnTemplate.filters,
            dense_units=model.cnn.dense_units or CnnTemplate.dense_units,
            dropout=model.cnn.dropout,
        )
    if source == "keras_json":
        return KerasJsonModel(model.keras_json)
    if source == "mlp":
        return MlpTemplate(
            hidden_units=tuple(model.mlp.hidden_units) or MlpTemplate.hidden_units,
            dropout=model.mlp.dropout,
        )
    raise invalid("spec.model", "set one of mlp, cnn or keras_json")


def _hyperparameters_from_proto(hp: pb.Hyperparameters) -> Hyperparameters:
    if hp.optimizer not in _OPTIMIZERS:
        raise invalid("spec.hyperparameters.optimizer", f"unknown optimizer {hp.optimizer}")
    stopping = None
    if hp.HasField("early_stopping"):
        stopping = EarlyStopping(
            monitor=hp.early_stopping.monitor or "val_loss",
            patience=hp.early_stopping.patience,
            min_delta=hp.early_stopping.min_delta,
        )
    return Hyperparameters(
        epochs=hp.epochs,
        optimizer=_OPTIMIZERS[hp.optimizer],
        learning_rate=hp.learning_rate or DEFAULT_LEARNING_RATE,
        batch_size=hp.batch_size or DEFAULT_BATCH_SIZE,
        early_stopping=stopping,
    )


def _parameter_from_proto(parameter: pb.SearchParameter, index: int) -> SearchParameter:
    domain = parameter.WhichOneof("domain")
    if domain == "float_range":
        bounds = parameter.float_range
        return SearchParameter(parameter.name, "float", bounds.low, bounds.high, bounds.log)
    if domain == "int_range":
        ints = parameter.int_range
        return SearchParameter(parameter.name, "int", float(ints.low), float(ints.high), ints.log)
    if domain == "choice":
        return SearchParameter(parameter.name, "choice", choices=tuple(parameter.choice.values))
    raise invalid(f"spec.search.parameters[{index}]", "set one of float_range, int_range or choice")


PRUNERS: dict[pb.Pruner.ValueType, Literal["none", "median", "hyperband"]] = {
    pb.PRUNER_UNSPECIFIED: "none",
    pb.PRUNER_MEDIAN: "median",
    pb.PRUNER_HYPERBAND: "hyperband",
}


def spec_from_proto(spec: pb.JobSpec) -> JobSpec:
    search = None
    if spec.HasField("search"):
        pruner = PRUNERS.get(spec.search.pruner)
        if pruner is None:
            raise invalid("spec.search.pruner", "not a pruner: PRUNER_MEDIAN or PRUNER_HYPERBAND")
        search = SearchSpace(
            parameters=tuple(
                _parameter_from_proto(parameter, index)
                for index, parameter in enumerate(spec.search.parameters)
            ),
            max_trials=spec.search.max_trials,
            epochs_per_trial=spec.search.epochs_per_trial or DEFAULT_EPOCHS_PER_TRIAL,
            pruner=pruner,
        )
    return JobSpec(
        dataset_version=spec.dataset_version,
        model=model_from_proto(spec.model),
        hyperparameters=_hyperparameters_from_proto(spec.hyperparameters),
        search=search,
        model_name=spec.model_name,
        request_promotion=spec.request_promotion,
        export_tflite=spec.export_tflite,
        seed=spec.seed,
        workers=spec.workers or 1,
    )


def _model_to_proto(model: ModelSource) -> pb.ModelSpec:
    if isinstance(model, MlpTemplate):
        return pb.ModelSpec(
            mlp=pb.MlpTemplate(hidden_units=model.hidden_units, dropout=model.dropout)
        )
    if isinstance(model, CnnTemplate):
        return pb.ModelSpec(
            cnn=pb.CnnTemplate(
                filters=model.filters, dense_units=model.dense_units, dropout=model.dropout
            )
        )
    return pb.ModelSpec(keras_json=model.json)


def _parameter_to_proto(parameter: SearchParameter) -> pb.SearchParameter:
    if parameter.kind == "float":
        return pb.SearchParameter(
            name=parameter.name,
            float_range=pb.FloatRange(low=parameter.low, high=parameter.high, log=parameter.log),
        )
    if parameter.kind == "int":
        return pb.SearchParameter(
            name=parameter.name,
            int_range=pb.IntRange(
                low=int(parameter.low), high=int(parameter.high), log=parameter.log
            ),
        )
    return pb.SearchParameter(name=parameter.name, choice=pb.Choice(values=parameter.choices))


def spec_to_proto(spec: JobSpec) -> pb.JobSpec:
    hp = spec.hyperparameters
    hyperparameters = pb.Hyperparameters(
        optimizer=_OPTIMIZER_ENUMS[hp.optimizer],
        learning_rate=hp.learning_rate,
        epochs=hp.epochs,
        batch_size=hp.batch_size,
    )
    if hp.early_stopping is not None:
        hyperparameters.early_stopping.CopyFrom(
            pb.EarlyStopping(
                monitor=hp.early_stopping.monitor,
                patience=hp.early_stopping.patience,
                min_delta=hp.early_stopping.min_delta,
            )
        )
    message = pb.JobSpec(
        dataset_version=spec.dataset_version,
        model=_model_to_proto(spec.model),
        hyperparameters=hyperparameters,
        model_name=spec.model_name,
        request_promotion=spec.request_promotion,
        export_tflite=spec.export_tflite,
        seed=spec.seed,
        workers=spec.workers,
    )
    if spec.search is not None:
        message.search.CopyFrom(
            pb.SearchSpace(
                parameters=[_parameter_to_proto(p) for p in spec.search.parameters],
                max_trials=spec.search.max_trials,
                epochs_per_trial=spec.search.epochs_per_trial,
                pruner={name: value for value, name in PRUNERS.items()}[spec.search.pruner],
            )
        )
    return message


def state_from_proto(state: pb.JobState.ValueType) -> JobState | None:
    """None for JOB_STATE_UNSPECIFIED (no filter)."""
    if state == pb.JOB_STATE_UNSPECIFIED:
        return None
    if state not in _STATES_BY_ENUM:
        raise invalid("state", f"unknown job state {state}")
    return _STATES_BY_ENUM[state]


def _trial_to_proto(trial: dict[str, Any]) -> pb.TrialResult:
    return pb.TrialResult(
        number=trial["number"],
        params={name: str(value) for name, value in trial["params"].items()},
        objective=trial["objective"],
        pruned=trial.get("pruned", False),
    )


def job_to_proto(job: JobRecord) -> pb.Job:
    message = pb.Job(
        name=job.job_id,
        spec=spec_to_proto(job.spec),
        state=_STATES[job.state],
        create_time=_timestamp(job.create_time),
        phase=job.phase,
        epochs_completed=job.epochs_completed,
        epochs=job.spec.hyperparameters.epochs,
        trials_completed=job.trials_completed,
        attempt=job.attempt,
        cancel_requested=job.cancel_requested,
        metrics=job.metrics,
        params=job.params,
        trials=[_trial_to_proto(trial) for trial in job.trials],
        artifacts=job.artifacts,
        error=job.error,
    )
    if job.start_time is not None:
        message.start_time.CopyFrom(_timestamp(job.start_time))
    if job.end_time is not None:
        message.end_time.CopyFrom(_timestamp(job.end_time))
    if job.resumed_from_epoch is not None:
        message.resumed_from_epoch = job.resumed_from_epoch
    if job.registration is not None:
        registration = job.registration
        message.registration.CopyFrom(
            pb.Registration(
                model=registration.model,
                version=registration.version,
                created=registration.created,
                promotion_requested=registration.promotion_requested,
                promoted=registration.promoted,
                promotion_message=registration.promotion_message,
            )
        )
    return message


def event_to_proto(event: JobEvent) -> pb.WatchJobResponse:
    message = pb.WatchJobResponse(sequence=event.sequence, event_time=_timestamp(event.time))
    payload = event.payload
    if event.kind is EventKind.STATE:
        message.state_change.CopyFrom(
            pb.StateChange(state=_STATES[JobState(payload["state"])], message=payload["message"])
        )
    elif event.kind is EventKind.EPOCH:
        message.epoch.CopyFrom(
            pb.EpochMetrics(
                trial=payload["trial"],
                epoch=payload["epoch"],
                epochs=payload["epochs"],
                metrics=payload["metrics"],
            )
        )
    else:
        message.trial.CopyFrom(_trial_to_proto(payload))
    return message
