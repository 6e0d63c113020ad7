"""Spec validation, the Keras JSON checks, and the proto <-> spec converters (no training)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.training import converters
from services.training.datasource import DatasetInfo
from services.training.models import (
    build_model,
    check_model_fits,
    keras_json_violations,
    normalization_layer,
)
from services.training.spec import (
    CnnTemplate,
    EarlyStopping,
    Hyperparameters,
    JobSpec,
    KerasJsonModel,
    MlpTemplate,
    SearchParameter,
    SearchSpace,
    base_params,
    spec_from_dict,
    spec_to_dict,
    spec_violations,
)
from shared.errors import InvalidArgument
from tfmesh.training.v1 import training_pb2 as pb

INFO = DatasetInfo("digits@0123456789ab", (64,), 10)


def spec_with(**hyperparameters) -> JobSpec:
    return JobSpec(INFO.version, MlpTemplate(), Hyperparameters(**{"epochs": 3, **hyperparameters}))


@pytest.mark.parametrize(
    ("hyperparameters", "field"),
    [
        ({"epochs": 0}, "spec.hyperparameters.epochs"),
        ({"epochs": -1}, "spec.hyperparameters.epochs"),
        ({"learning_rate": -0.01}, "spec.hyperparameters.learning_rate"),
        ({"learning_rate": float("nan")}, "spec.hyperparameters.learning_rate"),
        ({"batch_size": -8}, "spec.hyperparameters.batch_size"),
        (
            {"early_stopping": EarlyStopping("val_auc", 2)},
            "spec.hyperparameters.early_stopping.monitor",
        ),
        (
            {"early_stopping": EarlyStopping("val_loss", 0)},
            "spec.hyperparameters.early_stopping.patience",
        ),
    ],
)
def test_bad_hyperparameters_name_their_field(hyperparameters, field):
    assert field in [v.field for v in spec_violations(spec_with(**hyperparameters))]


def test_a_good_spec_has_no_violations():
    assert spec_violations(spec_with()) == []


def test_search_space_checks():
    search = SearchSpace(
        (
            SearchParameter("learning_rate", "float", 0.0, 0.1, log=True),
            SearchParameter("hidden_units", "choice", choices=("64,abc",)),
            SearchParameter("batch_size", "float", 8, 64),
        ),
        max_trials=0,
    )
    spec = JobSpec(INFO.version, MlpTemplate(), Hyperparameters(epochs=1), search=search)
    fields = {v.field for v in spec_violations(spec)}
    assert {
        "spec.search.max_trials",
        "spec.search.parameters[0]",
        "spec.search.parameters[1].choice.values",
        "spec.search.parameters[2]",
    } <= fields


def test_keras_json_refuses_lambda_and_custom_classes():
    with_lambda = keras.Sequential([keras.Input((64,)), keras.layers.Lambda(lambda v: v)])
    assert "Lambda" in keras_json_violations(with_lambda.to_json())[0].description

    class Doubler(keras.layers.Layer):
        def call(self, inputs):
            return inputs * 2

    custom = keras.Sequential([keras.Input((64,)), Doubler()])
    assert keras_json_violations(custom.to_json())
    assert keras_json_violations("{not json")
    inputs = keras.Input((64,))
    functional = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(inputs))
    assert keras_json_violations(functional.to_json()) == []


def test_keras_json_must_fit_the_dataset():
    fits = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
    check_model_fits(KerasJsonModel(fits.to_json()), base_params(spec_with()), INFO)
    wrong_classes = keras.Sequential([keras.Input((64,)), keras.layers.Dense(3)])
    with pytest.raises(InvalidArgument, match="10 classes"):
        check_model_fits(KerasJsonModel(wrong_classes.to_json()), base_params(spec_with()), INFO)
    no_input = keras.Sequential([keras.layers.Dense(10)])
    with pytest.raises(InvalidArgument, match="input shape"):
        check_model_fits(KerasJsonModel(no_input.to_json()), base_params(spec_with()), INFO)


def test_cnn_needs_image_features():
    with pytest.raises(InvalidArgument):
        check_model_fits(CnnTemplate(), base_params(spec_with()), INFO)
    images = DatasetInfo("digits@0123456789ab", (8, 8, 1), 10)
    check_model_fits(CnnTemplate(filters=(8, 8)), base_params(spec_with()), images)
    with pytest.raises(InvalidArgument, match="fewer filters"):
        check_model_fits(CnnTemplate(filters=(8, 8, 8, 8)), base_params(spec_with()), images)


def test_constant_features_do_not_blow_up_normalization():
    mean = np.zeros(4, np.float32)
    std = np.array([1.0, 0.0, 2.0, 0.0], np.float32)
    layer = normalization_layer(mean, std)
    out = np.asarray(layer(np.array([[1.0, 3.0, 2.0, 5.0]], np.float32)))
    assert np.allclose(out, [[1.0, 3.0, 1.0, 5.0]])


def test_cnn_template_trains_on_images_with_per_channel_statistics():
    images = DatasetInfo("digits@0123456789ab", (8, 8, 1), 10)
    model = build_model(
        CnnTemplate(filters=(4,), dense_units=8),
        base_params(spec_with()),
        images,
        np.array([5.0], np.float32),
        np.array([4.0], np.float32),
    )
    x = np.random.default_rng(0).uniform(0, 16, (40, 8, 8, 1)).astype(np.float32)
    history = model.fit(x, np.arange(40) % 10, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


specs = st.builds(
    JobSpec,
    dataset_version=st.just(INFO.version),
    model=st.one_of(
        st.builds(MlpTemplate, st.tuples(st.integers(1, 512)), st.floats(0, 0.9)),
        st.builds(CnnTemplate, st.tuples(st.integers(1, 64)), st.integers(1, 128)),
        st.builds(KerasJsonModel, st.text(min_size=1)),
    ),
    hyperparameters=st.builds(
        Hyperparameters,
        epochs=st.integers(1, 100),
        optimizer=st.sampled_from(["adam", "sgd", "rmsprop"]),
        learning_rate=st.floats(1e-6, 1.0),
        batch_size=st.integers(1, 1024),
        early_stopping=st.none() | st.builds(EarlyStopping, st.just("val_loss"), st.integers(1, 9)),
    ),
    search=st.none()
    | st.builds(
        SearchSpace,
        st.tuples(
            st.builds(
                SearchParameter,
                st.just("learning_rate"),
                st.just("float"),
                st.just(1e-4),
                st.just(1e-2),
                st.booleans(),
            )
        ),
        st.integers(1, 20),
        st.integers(1, 5),
        st.sampled_from(["none", "median", "hyperband"]),
    ),
    model_name=st.sampled_from(["", "digits-mlp"]),
    seed=st.integers(0, 2**31),
    workers=st.integers(1, 16),
)


@settings(max_examples=60, deadline=None)
@given(specs)
def test_spec_round_trips_through_json_and_proto(spec):
    assert spec_from_dict(spec_to_dict(spec)) == spec
    assert converters.spec_from_proto(converters.spec_to_proto(spec)) == spec


def test_unset_proto_fields_take_the_documented_defaults():
    spec = converters.spec_from_proto(
        pb.JobSpec(
            dataset_version=INFO.version,
            model=pb.ModelSpec(mlp=pb.MlpTemplate()),
            hyperparameters=pb.Hyperparameters(epochs=2),
        )
    )
    assert spec.model == MlpTemplate((128, 64), 0.0)
    assert spec.hyperparameters == Hyperparameters(2, "adam", 1e-3, 32, None)
    with pytest.raises(InvalidArgument):
        converters.spec_from_proto(pb.JobSpec(dataset_version=INFO.version))


def test_an_unknown_pruner_is_refused_naming_its_field():
    message = pb.JobSpec(
        dataset_version=INFO.version,
        model=pb.ModelSpec(mlp=pb.MlpTemplate()),
        hyperparameters=pb.Hyperparameters(epochs=2),
        search=pb.SearchSpace(max_trials=2, pruner=7),
    )
    with pytest.raises(InvalidArgument) as refused:
        converters.spec_from_proto(message)
    assert [v.field for v in refused.value.violations] == ["spec.search.pruner"]


def test_a_job_stored_before_pruning_searches_without_it():
    stored = spec_to_dict(
        converters.spec_from_proto(
            pb.JobSpec(
                dataset_version=INFO.version,
                model=pb.ModelSpec(mlp=pb.MlpTemplate()),
                hyperparameters=pb.Hyperparameters(epochs=2),
                search=pb.SearchSpace(max_trials=2),
            )
        )
    )
    del stored["search"]["pruner"]
    assert spec_from_dict(stored).search.pruner == "none"


def test_a_job_stored_before_multi_worker_jobs_trains_in_one_process():
    stored = spec_to_dict(JobSpec(INFO.version, MlpTemplate(), Hyperparameters(epochs=2)))
    del stored["workers"]
    assert spec_from_dict(stored).workers == 1


@pytest.mark.parametrize(
    ("workers", "search", "early_stopping"),
    [(17, False, False), (2, True, False), (2, False, True)],
)
def test_multi_worker_jobs_refuse_what_they_cannot_do(workers, search, early_stopping):
    spec = JobSpec(
        INFO.version,
        MlpTemplate(),
        Hyperparameters(
            epochs=2, early_stopping=EarlyStopping("val_loss", 2) if early_stopping else None
        ),
        search=(
            SearchSpace((SearchParameter("learning_rate", "float", 1e-4, 1e-2),), 2)
            if search
            else None
        ),
        workers=workers,
    )
    assert [v.field for v in spec_violations(spec)] == ["spec.workers"]
