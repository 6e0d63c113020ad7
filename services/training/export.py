"""Export of a trained model into the artifacts the registry keeps.

- `saved_model.tar`: a TensorFlow SavedModel whose `serving_default` signature takes one
  float32 input named `x` (a batch of raw, un-normalized features) and returns
  `output_0` (class probabilities). The tar's entries are the SavedModel's own files
  (`saved_model.pb`, `variables/...`), so it unpacks into any folder as a loadable model.
- `model.keras`: the Keras 3 archive of the same model, loadable on any Keras backend.
- `model.tflite` (optional): post-training dynamic-range quantized TFLite
  (`Optimize.DEFAULT`), the compressed model for small devices."""

from __future__ import annotations

import tarfile
from pathlib import Path

import keras
import tensorflow as tf

from services.training.jobs import ArtifactFile
from services.training.models import INPUT_NAME
from services.training.quantization import quantize

SAVED_MODEL_ARTIFACT = "saved_model.tar"
KERAS_ARTIFACT = "model.keras"
TFLITE_ARTIFACT = "model.tflite"
MEDIA_TYPES = {
    SAVED_MODEL_ARTIFACT: "application/x-tar",
    KERAS_ARTIFACT: "application/vnd.keras+zip",
    TFLITE_ARTIFACT: "application/vnd.tflite",
}


def _tar_folder(folder: Path, archive: Path) -> None:
    """Deterministic tar of `folder`'s contents: sorted entries, no owners or times."""

    def scrub(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        return info

    with tarfile.open(archive, "w") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False, filter=scrub)


def export_saved_model(model: keras.Model, folder: Path) -> None:
    signature = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32, name=INPUT_NAME)
    model.export(str(folder), format="tf_saved_model", input_signature=[signature], verbose=False)


def export_tflite(saved_model: Path, destination: Path) -> None:
    destination.write_bytes(quantize(saved_model, "dynamic"))


def export_model(model: keras.Model, out_dir: Path, with_tflite: bool) -> list[ArtifactFile]:
    """Write every artifact of `model` under `out_dir`, in registration order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    saved_model = out_dir / "saved_model"
    export_saved_model(model, saved_model)
    paths = {
        SAVED_MODEL_ARTIFACT: out_dir / SAVED_MODEL_ARTIFACT,
        KERAS_ARTIFACT: out_dir / KERAS_ARTIFACT,
    }
    _tar_folder(saved_model, paths[SAVED_MODEL_ARTIFACT])
    model.save(paths[KERAS_ARTIFACT])
    if with_tflite:
        paths[TFLITE_ARTIFACT] = out_dir / TFLITE_ARTIFACT
        export_tflite(saved_model, paths[TFLITE_ARTIFACT])
    return [ArtifactFile(name, path, MEDIA_TYPES[name]) for name, path in paths.items()]
