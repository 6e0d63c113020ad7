"""Sample datasets bundled with scikit-learn, as upload files (no network needed).

`digits` becomes an NPZ of 8 x 8 x 1 images (the image path); `iris`, `wine` and
`breast_cancer` become CSVs with scikit-learn's feature names and a `target` column of
class indices (the tabular path). The files are byte-for-byte reproducible, so importing
a sample twice returns the same version. scikit-learn is imported on first use only."""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass

import numpy as np

from services.data.entities import DataFormat
from shared.errors import invalid

SAMPLES = ("digits", "iris", "wine", "breast_cancer")
TABULAR_LABEL = "target"
# A fixed member time keeps the NPZ's bytes (and so its version) the same on every import.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class SampleFile:
    format: DataFormat
    label_column: str
    content: bytes


def sample_file(name: str) -> SampleFile:
    if name not in SAMPLES:
        raise invalid("sample", f"unknown sample {name!r}; choose one of {list(SAMPLES)}")
    from sklearn import datasets

    if name == "digits":
        digits = datasets.load_digits()
        images = digits.images[..., np.newaxis].astype(np.uint8)
        return SampleFile(DataFormat.NPZ, "", npz_bytes(images, digits.target.astype(np.int64)))
    loaders = {
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
    }
    table = loaders[name]()
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([*table.feature_names, TABULAR_LABEL])
    for features, target in zip(table.data.tolist(), table.target.tolist(), strict=True):
        writer.writerow([*(repr(value) for value in features), target])
    return SampleFile(DataFormat.CSV, TABULAR_LABEL, text.getvalue().encode())


def npz_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    """An .npz of `x` and `y` whose bytes depend on the arrays only."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as npz:
        for member, array in (("x.npy", x), ("y.npy", y)):
            content = io.BytesIO()
            np.lib.format.write_array(content, np.ascontiguousarray(array), allow_pickle=False)
            npz.writestr(zipfile.ZipInfo(member, date_time=_ZIP_TIME), content.getvalue())
    return archive.getvalue()
