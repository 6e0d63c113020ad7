"""What a trained classifier is registered with besides its metrics: its confusion matrix on
the test split, written as the `evaluation.json` artifact of the version, so the registry
keeps it with the model (the web console draws it, and compares two versions' side by
side). Rows are the true classes, columns the predicted ones, both by class index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from services.training.jobs import ArtifactFile

EVALUATION_ARTIFACT = "evaluation.json"
MEDIA_TYPE = "application/json"


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, classes: int) -> list[list[int]]:
    """counts[i][j]: test rows of true class i predicted as class j."""
    counts = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(counts, (truth.astype(np.int64), predicted.astype(np.int64)), 1)
    return counts.tolist()


def write_evaluation(
    probabilities: np.ndarray, truth: np.ndarray, classes: int, out_dir: Path
) -> ArtifactFile:
    """`evaluation.json` of a classifier's test-split answers, under `out_dir`."""
    predicted = np.argmax(probabilities, axis=1)
    matrix = confusion_matrix(truth, predicted, classes)
    document = {
        "split": "test",
        "rows": int(len(truth)),
        "classes": [str(c) for c in range(classes)],
        "accuracy": float(np.mean(predicted == truth)) if len(truth) else 0.0,
        "confusion_matrix": matrix,
    }
    path = out_dir / EVALUATION_ARTIFACT
    path.write_text(json.dumps(document))
    return ArtifactFile(EVALUATION_ARTIFACT, path, MEDIA_TYPE)
