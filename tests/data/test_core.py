"""The data core without sockets: ingest of CSV and NPZ, statistics against numpy, the
deterministic split, dedupe, the bad-row policy, reference schemas, reads and deletes."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest

from services.data.core import DataCore
from services.data.entities import (
    SPLITS,
    AnomalyKind,
    FeatureKind,
    Split,
    SplitRatios,
    UploadSpec,
)
from services.data.samples import SAMPLES, npz_bytes
from shared.errors import FailedPrecondition, InvalidArgument, NotFound
from tests.data.conftest import (
    csv_bytes,
    images,
    ingest,
    numeric_table,
    read_all,
    stacked,
    stored_files,
)


def rows_by_split(core: DataCore, name: str) -> dict[tuple, Split]:
    """Each stored row (features + label, as a tuple) mapped to its split."""
    found = {}
    for split, (x, y) in read_all(core, name).items():
        for features, label in zip(x.reshape(len(x), -1).tolist(), y.tolist(), strict=True):
            found[(*features, label)] = split
    return found


def test_csv_rows_read_back_as_uploaded_across_splits_and_shards(core):
    x, y, content = numeric_table(1500)
    version, created = ingest(core, content)
    assert created and version.name.startswith("table@") and len(version.name) == 6 + 12
    assert version.rows.total == version.rows.kept == 1500
    assert version.schema.feature_shape == [3]
    assert version.schema.label_vocabulary == ["0", "1", "2"]
    assert [f.kind for f in version.schema.features] == [FeatureKind.FLOAT] * 3
    parts = read_all(core, version.name)
    assert sum(len(labels) for _, labels in parts.values()) == 1500
    assert [len(parts[s][1]) for s in SPLITS] == [
        version.rows.train,
        version.rows.validation,
        version.rows.test,
    ]
    stored = sorted(
        (*features, label)
        for features, labels in parts.values()
        for features, label in zip(features.tolist(), labels.tolist(), strict=True)
    )
    expected = sorted(
        (*features, int(label))
        for features, label in zip(x.astype(np.float32).tolist(), y, strict=True)
    )
    assert stored == expected
    assert len(core.shards(version.name, Split.TRAIN).locations) > 1, "tiny shards: several"


def test_statistics_match_numpy_on_the_same_data(core):
    x, y, _ = numeric_table(800, features=4, classes=5, seed=3)
    text = [[repr(v) for v in row] for row in x.tolist()]
    missing = [(5, 0), (17, 2), (400, 2), (799, 3)]
    for row, column in missing:
        text[row][column] = ""
    content = csv_bytes(
        ["f0", "f1", "f2", "f3", "label"],
        [r + [int(label)] for r, label in zip(text, y, strict=True)],
    )
    version, _ = ingest(core, content, max_bad_row_fraction=0.01)
    assert version.rows.dropped == len(missing)
    statistics = core.statistics(version.name)
    for j, feature in enumerate(statistics.features):
        present = np.delete(x[:, j], [r for r, c in missing if c == j])
        assert feature.count == len(present)
        assert feature.missing == sum(1 for _, c in missing if c == j)
        assert feature.mean == pytest.approx(np.mean(present), rel=1e-12)
        assert feature.std == pytest.approx(np.std(present), rel=1e-12)
        assert (feature.min, feature.max) == (present.min(), present.max())
        counts, edges = np.histogram(present, bins=10)
        assert feature.histogram is not None
        assert feature.histogram.counts == counts.tolist()
        assert feature.histogram.edges == pytest.approx(edges.tolist(), rel=1e-15)
    labels, counts = np.unique(y, return_counts=True)
    assert [(c.label, c.count) for c in statistics.labels] == [
        (str(label), int(count)) for label, count in zip(labels, counts, strict=True)
    ]
    train_x, train_y = read_all(core, version.name)[Split.TRAIN]
    for c in statistics.labels:
        assert c.train == int((train_y == c.index).sum())
    assert statistics.normalization.rows == version.rows.train == len(train_x)
    # The stored values are float32: a mean near 0 agrees to float32's rounding, not 1e-6 of it.
    assert statistics.normalization.mean == pytest.approx(train_x.mean(axis=0), rel=1e-6, abs=1e-6)
    assert statistics.normalization.std == pytest.approx(train_x.std(axis=0), rel=1e-5)
    assert statistics.normalization.mean != pytest.approx(x.mean(axis=0), rel=1e-6)


def test_split_follows_row_content_across_reuploads_in_any_order(core):
    _, _, content = numeric_table(2000, seed=7)
    header, *lines = content.decode().splitlines()
    first, _ = ingest(core, content)
    random.Random(1).shuffle(lines)
    extra = [f"{i}.5,{i}.25,{i}.125,1" for i in range(300)]
    reordered = "\n".join([header, *extra, *lines]).encode()
    second, created = ingest(core, reordered)
    assert created and second.name != first.name
    before, after = rows_by_split(core, first.name), rows_by_split(core, second.name)
    assert len(after) == len(before) + 300
    assert all(after[row] == split for row, split in before.items())
    shares = np.array([first.rows.train, first.rows.validation, first.rows.test]) / 2000
    assert shares == pytest.approx([0.8, 0.1, 0.1], abs=0.03)


def test_split_ratios_are_configurable(core):
    _, _, content = numeric_table(1000, seed=2)
    version, _ = ingest(
        core, content, split_ratios=SplitRatios(train=0.5, validation=0.5, test=0.0)
    )
    assert version.rows.test == 0
    assert version.rows.train / 1000 == pytest.approx(0.5, abs=0.05)
    assert version.split_ratios == SplitRatios(train=0.5, validation=0.5, test=0.0)


def test_identical_content_returns_the_existing_version(core, blobs):
    _, _, content = numeric_table(300)
    version, created = ingest(core, content)
    files = stored_files(blobs)
    again, created_again = ingest(core, content)
    assert created and not created_again
    assert again == version
    assert stored_files(blobs) == files
    other_ratios, created = ingest(
        core, content, split_ratios=SplitRatios(train=0.6, validation=0.2, test=0.2)
    )
    assert created and other_ratios.name != version.name
    other_dataset, created = ingest(core, content, dataset="copy")
    assert created and other_dataset.name.startswith("copy@")
    assert other_dataset.digest == version.digest


def test_bad_rows_under_the_threshold_are_dropped_and_counted(core):
    content = b"a,b,kind,label\n" + b"".join(
        f"{i},{i * 2},{'red' if i % 2 else 'blue'},{i % 3}\n".encode() for i in range(100)
    )
    content += b"1,,red,0\n2,x,blue,1\n3,inf,red,2\n4,5,red,\n"
    version, _ = ingest(core, content, max_bad_row_fraction=0.05)
    assert version.rows.total == 104 and version.rows.dropped == 4 and version.rows.kept == 100
    report = version.anomalies
    assert report.bad_rows == 4
    assert report.counts == {
        AnomalyKind.MISSING_VALUE: 1,
        AnomalyKind.NOT_A_NUMBER: 1,
        AnomalyKind.NOT_FINITE: 1,
        AnomalyKind.MISSING_LABEL: 1,
    }
    assert [(a.row, a.column, a.kind) for a in report.examples] == [
        (100, "b", AnomalyKind.MISSING_VALUE),
        (101, "b", AnomalyKind.NOT_A_NUMBER),
        (102, "b", AnomalyKind.NOT_FINITE),
        (103, "label", AnomalyKind.MISSING_LABEL),
    ]
    assert report.examples[1].detail == "not a number: 'x'"
    kinds = {f.name: f.kind for f in version.schema.features}
    assert kinds == {"a": FeatureKind.INT, "b": FeatureKind.INT, "kind": FeatureKind.CATEGORICAL}
    assert version.schema.features[2].vocabulary == ["blue", "red"]
    x, _ = stacked(core, version.name)
    assert sorted(x[:, 0].tolist()) == list(range(100))
    assert set(x[:, 2].tolist()) == {0.0, 1.0}


def test_bad_rows_over_the_threshold_reject_the_upload_and_store_nothing(core, blobs):
    lines = ["a,label"] + [f"{i},x" for i in range(3000)]
    for row in range(0, 3000, 10):
        lines[row + 1] = f"oops{row},x"
    with pytest.raises(InvalidArgument) as error:
        ingest(core, "\n".join(lines).encode(), max_bad_row_fraction=0.05)
    fields = [(v.field, v.description) for v in error.value.violations]
    assert fields[0] == (
        "header.max_bad_row_fraction",
        "300 of 3000 rows (10.0%) are bad, more than the 5.0% allowed; nothing was stored",
    )
    assert fields[1:3] == [
        ("chunk", "row 0, column 'a': not a number: 'oops0'"),
        ("chunk", "row 10, column 'a': not a number: 'oops10'"),
    ]
    assert core.list_versions("", 0, "").items == []
    assert stored_files(blobs) == []


def test_a_stricter_policy_refuses_known_content_without_losing_it(core):
    content = b"a,label\n1,x\n2,y\nbad,x\n4,y\n"
    version, _ = ingest(core, content, max_bad_row_fraction=0.5)
    with pytest.raises(InvalidArgument, match="1 of 4 rows"):
        ingest(core, content, max_bad_row_fraction=0.1)
    assert core.get_version(version.name) == version
    assert sum(len(y) for _, y in read_all(core, version.name).values()) == 3


def test_reference_schema_flags_ranges_categories_and_labels(core):
    reference, _ = ingest(core, b"size,color,label\n1,red,a\n5,blue,b\n3,red,a\n")
    content = b"size,color,label\n2,blue,b\n9,red,a\n4,green,a\n3,red,c\n1,blue,a\n"
    version, _ = ingest(core, content, reference_version=reference.name, max_bad_row_fraction=0.6)
    assert version.schema == reference.schema
    assert [(a.row, a.column, a.kind) for a in version.anomalies.examples] == [
        (1, "size", AnomalyKind.OUT_OF_RANGE),
        (2, "color", AnomalyKind.UNKNOWN_CATEGORY),
        (3, "label", AnomalyKind.UNKNOWN_LABEL),
    ]
    assert version.anomalies.examples[0].detail == "9 is outside the schema's range [1, 5]"
    x, y = stacked(core, version.name)
    # Encoded with the reference's vocabularies: blue=0, red=1; labels a=0, b=1.
    assert sorted(zip(x[:, 0].tolist(), x[:, 1].tolist(), y.tolist(), strict=True)) == [
        (1.0, 0.0, 0),
        (2.0, 0.0, 1),
    ]
    with pytest.raises(InvalidArgument, match="the reference has features"):
        ingest(core, b"weight,color,label\n1,red,a\n", reference_version=reference.name)


def test_an_int_column_takes_whole_numbers_only(core):
    reference, _ = ingest(core, b"count,label\n1,a\n5,b\n3,a\n")
    assert reference.schema.features[0].kind is FeatureKind.INT
    content = b"count,label\n2,a\n2.5,b\n4,a\n"
    version, _ = ingest(core, content, reference_version=reference.name, max_bad_row_fraction=0.5)
    (anomaly,) = version.anomalies.examples
    assert (anomaly.row, anomaly.kind) == (1, AnomalyKind.NOT_A_NUMBER)
    assert anomaly.detail == "not an integer: '2.5' (the schema's column is INT)"
    # Whole numbers past float64's exact range are not inferred as INT.
    wide, _ = ingest(core, b"big,label\n1,a\n18446744073709551616,b\n", dataset="wide")
    assert wide.schema.features[0].kind is FeatureKind.FLOAT


def test_fractions_under_an_int_reference_in_npz_are_refused_not_truncated(core):
    whole = np.arange(40, dtype=np.int64).reshape(20, 2)
    labels = np.arange(20) % 2
    reference, _ = ingest(core, npz_bytes(whole, labels), format="npz", dataset="counts")
    assert reference.schema.features[0].kind is FeatureKind.INT
    halves = whole.astype(np.float32) / 2 + 0.25
    with pytest.raises(InvalidArgument, match="INT feature"):
        ingest(
            core,
            npz_bytes(halves, labels),
            format="npz",
            dataset="counts",
            reference_version=reference.name,
        )


def test_npz_images_round_trip_with_per_channel_statistics(core):
    x, y, content = images(300)
    version, _ = ingest(core, content, format="npz", dataset="pictures")
    assert version.schema.feature_shape == [6, 5, 2]
    assert version.label_column == "y"
    assert [f.name for f in version.schema.features] == ["x[..., 0]", "x[..., 1]"]
    assert [f.kind for f in version.schema.features] == [FeatureKind.INT] * 2
    stored = sorted(
        (features.tobytes(), label)
        for features_batch, labels in read_all(core, version.name).values()
        for features, label in zip(features_batch, labels.tolist(), strict=True)
    )
    assert stored == sorted(
        (row.astype(np.float32).tobytes(), int(label)) for row, label in zip(x, y, strict=True)
    )
    statistics = core.statistics(version.name)
    for channel, feature in enumerate(statistics.features):
        values = x[..., channel].astype(np.float64).ravel()
        assert feature.count == values.size
        assert feature.mean == pytest.approx(values.mean(), rel=1e-12)
        assert feature.std == pytest.approx(values.std(), rel=1e-12)
        assert feature.histogram is not None
        assert feature.histogram.counts == np.histogram(values, bins=10)[0].tolist()
    train_x, _ = read_all(core, version.name)[Split.TRAIN]
    assert statistics.normalization.mean == pytest.approx(
        train_x.reshape(-1, 2).mean(axis=0), rel=1e-6
    )


def test_npz_with_nan_rows_text_labels_and_compression(core):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    x[[3, 50], 1] = np.nan
    x[77, 0] = np.inf
    y = np.array(["cat", "dog", "emu"])[rng.integers(0, 3, size=200)]
    y[9] = ""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=x, y=y)
    version, _ = ingest(
        core, buffer.getvalue(), format="npz", dataset="animals", max_bad_row_fraction=0.05
    )
    assert version.schema.label_vocabulary == ["cat", "dog", "emu"]
    assert version.rows.dropped == 4
    assert version.anomalies.counts == {
        AnomalyKind.MISSING_VALUE: 2,
        AnomalyKind.NOT_FINITE: 1,
        AnomalyKind.MISSING_LABEL: 1,
    }
    stored_x, _ = stacked(core, version.name)
    keep = np.setdiff1d(np.arange(200), [3, 50, 77, 9])
    assert sorted(map(bytes, stored_x)) == sorted(map(bytes, x[keep]))


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((5, 2)), "y": np.zeros(4)}, "x has 5 rows, y has 4"),
        ({"x": np.zeros((5, 2))}, "exactly the arrays x and y"),
        ({"x": np.zeros((5, 2)), "y": np.zeros(5), "z": np.zeros(1)}, "exactly the arrays"),
        ({"x": np.zeros(5), "y": np.zeros(5)}, "2 or more axes"),
        ({"x": np.zeros((5, 2)), "y": np.zeros((5, 1))}, "one label per example"),
        ({"x": np.array([["a", "b"]] * 5), "y": np.zeros(5)}, "x must hold numbers"),
    ],
)
def test_malformed_npz_is_invalid_and_nothing_is_stored(core, blobs, arrays, message):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with pytest.raises(InvalidArgument, match=message):
        ingest(core, buffer.getvalue(), format="npz")
    assert stored_files(blobs) == []


def test_not_a_zip_is_invalid(core):
    with pytest.raises(InvalidArgument, match="not a readable NPZ"):
        ingest(core, b"definitely not a zip", format="npz")


@pytest.mark.parametrize("sample", SAMPLES)
def test_samples_import_through_the_same_path_and_dedupe(core, sample):
    from sklearn import datasets

    loaded = getattr(datasets, f"load_{sample}")()
    version, created = core.import_sample(sample, "", None)
    assert created and version.dataset == sample
    assert version.rows.total == version.rows.kept == len(loaded.target)
    assert len(version.schema.label_vocabulary) == len(loaded.target_names)
    again, created = core.import_sample(sample, "", None)
    assert not created and again.name == version.name
    x, y = stacked(core, version.name)
    expected = loaded.images[..., np.newaxis] if sample == "digits" else loaded.data
    assert sorted(map(bytes, x.reshape(len(x), -1))) == sorted(
        map(bytes, expected.astype(np.float32).reshape(len(expected), -1))
    )
    assert np.bincount(y).tolist() == np.bincount(loaded.target).tolist()


def test_unknown_sample_is_invalid(core):
    with pytest.raises(InvalidArgument) as error:
        core.import_sample("mnist", "", None)
    assert error.value.violations[0].field == "sample"


def test_upload_header_problems_are_reported_together(core):
    spec = UploadSpec(
        dataset="bad/name",
        format="DATA_FORMAT_UNSPECIFIED",
        split_ratios=SplitRatios(train=0.9, validation=0.2, test=0.0),
        max_bad_row_fraction=1.5,
        reference_version="nope",
    )
    with pytest.raises(InvalidArgument) as error:
        core.start_upload(spec)
    assert [v.field for v in error.value.violations] == [
        "header.dataset",
        "header.format",
        "header.split_ratios",
        "header.max_bad_row_fraction",
        "header.reference_version",
    ]
    with pytest.raises(InvalidArgument) as error:
        core.start_upload(UploadSpec(dataset="ok", format="csv"))
    assert [v.field for v in error.value.violations] == ["header.label_column"]


def test_read_batches_sizes_and_limits(core):
    _, _, content = numeric_table(500)
    version, _ = ingest(core, content)
    batches = list(core.read_batches(version.name, Split.TRAIN, 64))
    assert all(len(b.labels) == 64 for b in batches[:-1]) and 0 < len(batches[-1].labels) <= 64
    assert [b.first_row for b in batches] == list(range(0, version.rows.train, 64))
    assert batches[0].features.dtype == np.float32 and batches[0].labels.dtype == np.int64
    with pytest.raises(InvalidArgument, match="at most 65536 rows"):
        core.read_batches(version.name, Split.TRAIN, 65537)
    with pytest.raises(InvalidArgument, match="must be >= 0"):
        core.read_batches(version.name, Split.TRAIN, -1)
    with pytest.raises(NotFound):
        core.read_batches("table@000000000000", Split.TRAIN, 1)
    with pytest.raises(InvalidArgument):
        core.read_batches("table", Split.TRAIN, 1)


def test_list_pages_newest_first_and_filters_by_dataset(core):
    names = []
    for seed in range(5):
        _, _, content = numeric_table(20, seed=seed)
        names.append(ingest(core, content, dataset="a" if seed % 2 else "b")[0].name)
    first = core.list_versions("", 2, "")
    second = core.list_versions("", 2, first.next_page_token)
    third = core.list_versions("", 2, second.next_page_token)
    assert [v.name for v in first.items + second.items + third.items] == names[::-1]
    assert third.next_page_token == ""
    assert [v.name for v in core.list_versions("a", 0, "").items] == [names[3], names[1]]
    with pytest.raises(InvalidArgument):
        core.list_versions("", 0, "garbage")


async def test_soft_delete_hides_keeps_content_and_reupload_restores(core, blobs):
    _, _, content = numeric_table(100)
    version, _ = ingest(core, content)
    files = stored_files(blobs)
    assert await core.delete_version(version.name) is True
    with pytest.raises(NotFound):
        core.get_version(version.name)
    assert core.list_versions("", 0, "").items == []
    assert stored_files(blobs) == files
    restored, created = ingest(core, content)
    assert created and restored.name == version.name
    assert core.get_version(version.name) == version


class FakeLineage:
    """Stands in for the registry client; the gRPC path is tested in test_service."""

    def __init__(self, users: dict[str, list[str]]) -> None:
        self.users = users

    async def models_using(self, dataset_version: str) -> list[str]:
        return self.users.get(dataset_version, [])


async def test_delete_with_lineage_refuses_used_versions_and_purges_unused(core, store, blobs):
    _, _, used_content = numeric_table(100, seed=1)
    _, _, free_content = numeric_table(100, seed=2)
    used, _ = ingest(core, used_content)
    free, _ = ingest(core, free_content)
    lineage = FakeLineage({used.name: ["digits-mlp version 3"]})
    checked = DataCore(store, blobs, lineage=lineage)
    with pytest.raises(FailedPrecondition, match="digits-mlp version 3"):
        await checked.delete_version(used.name)
    used_files = stored_files(blobs)
    assert await checked.delete_version(free.name) is False
    with pytest.raises(NotFound):
        checked.get_version(free.name)
    remaining = stored_files(blobs)
    assert remaining and set(remaining) < set(used_files)
    assert sum(len(y) for _, y in read_all(core, used.name).values()) == 100


def test_collect_garbage_removes_only_unnamed_blobs(core, blobs):
    _, _, content = numeric_table(200)
    version, _ = ingest(core, content)
    named = stored_files(blobs)
    orphan = blobs.put_bytes(b"left behind by a crash")
    assert core.collect_garbage() == 1
    assert not blobs.exists(orphan)
    assert stored_files(blobs) == named
    assert core.collect_garbage() == 0
    assert len(read_all(core, version.name)[Split.TRAIN][1]) == version.rows.train


def test_sample_npz_bytes_are_reproducible():
    x, y = np.arange(12).reshape(3, 4), np.array([0, 1, 0])
    assert npz_bytes(x, y) == npz_bytes(x.copy(), y.copy())
