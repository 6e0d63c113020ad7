"""`tfmesh predict` against a real inference process serving noop models (the output is
the input), fed from JSON, CSV, NPY files and stdin."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()

ROWS = [[1, 2, 3, 4], [4, 3, 2, 1], [0, 0, 9, 0], [1, 1, 1, 1], [5, 5, 5, 6], [7, 0, 0, 0]]


def predictions(args: list[str], stdin: str | None = None) -> list[dict]:
    result = runner.invoke(app, ["predict", *args, "--json"], input=stdin)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["predictions"]


def test_json_csv_npy_and_stdin_agree(services, tmp_path):
    (tmp_path / "rows.json").write_text(json.dumps(ROWS))
    (tmp_path / "instances.json").write_text(json.dumps({"instances": ROWS}))
    (tmp_path / "rows.csv").write_text("a,b,c,d\n" + "\n".join(",".join(map(str, r)) for r in ROWS))
    np.save(tmp_path / "rows.npy", np.array(ROWS, dtype=np.float32))
    answers = [
        predictions(["echo", str(tmp_path / "rows.json")]),
        predictions(["echo", str(tmp_path / "instances.json")]),
        predictions(["echo", str(tmp_path / "rows.csv")]),
        predictions(["echo", str(tmp_path / "rows.npy")]),
        predictions(["echo", "-"], stdin=json.dumps({"inputs": {"x": ROWS}})),
    ]
    # Six rows in requests of the model's max_batch_size (4), each answered by production.
    expected = [{"version": 1, "output_0": [float(v) for v in row]} for row in ROWS]
    for answer in answers:
        assert answer == expected


def test_pins_reshape_and_the_table(services, tmp_path):
    (tmp_path / "rows.json").write_text(json.dumps(ROWS))
    canary = predictions(["echo", str(tmp_path / "rows.json"), "--label", "canary"])
    assert {p["version"] for p in canary} == {2}
    pinned = predictions(["echo", str(tmp_path / "rows.json"), "--version", "2"])
    assert {p["version"] for p in pinned} == {2}
    images = predictions(["image", str(tmp_path / "rows.json")])
    assert images[0]["output_0"] == [[[1.0], [2.0]], [[3.0], [4.0]]]
    shown = runner.invoke(app, ["predict", "echo", str(tmp_path / "rows.json")])
    assert shown.exit_code == 0
    table_rows = [line for line in shown.output.splitlines() if line.startswith("│")]
    cells = [[cell.strip() for cell in line.strip("│").split("│")] for line in table_rows]
    assert [(c[0], c[1], c[2], c[3]) for c in cells] == [
        (str(i), "1", str(int(np.argmax(row))), f"{max(row):.4f}") for i, row in enumerate(ROWS)
    ]


def test_bad_input_names_the_problem(services, tmp_path):
    (tmp_path / "short.json").write_text(json.dumps([[1, 2, 3]]))
    short = runner.invoke(app, ["predict", "echo", str(tmp_path / "short.json")])
    assert short.exit_code == 1 and "INVALID_ARGUMENT" in short.output
    assert "dimension 1 is 3" in short.output
    (tmp_path / "rows.txt").write_text("1,2,3,4")
    kind = runner.invoke(app, ["predict", "echo", str(tmp_path / "rows.txt")])
    assert kind.exit_code == 2 and ".json, .csv or .npy" in kind.output
    (tmp_path / "broken.json").write_text("[[1, 2,")
    broken = runner.invoke(app, ["predict", "echo", str(tmp_path / "broken.json")])
    assert broken.exit_code == 2
    unknown = runner.invoke(app, ["predict", "nope", str(tmp_path / "short.json")])
    assert unknown.exit_code == 1 and "NOT_FOUND" in unknown.output
    missing_version = runner.invoke(
        app, ["predict", "echo", str(tmp_path / "short.json"), "--version", "7"]
    )
    assert missing_version.exit_code == 2 and "serves no version" in missing_version.output
