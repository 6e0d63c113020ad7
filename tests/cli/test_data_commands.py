"""`tfmesh data ...` against a real data service process."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()

CSV = "\n".join(
    ["height,weight,kind"]
    + [f"{1.0 + i / 10:.2f},{50 + i},{'tall' if i % 2 else 'short'}" for i in range(60)]
    + ["1.5,,short", "oops,60,tall"]
)


def test_import_sample_list_show_and_stats(services):
    imported = runner.invoke(app, ["data", "import-sample", "iris", "--json"])
    assert imported.exit_code == 0, imported.output
    version = json.loads(imported.output)["version"]["name"]
    again = runner.invoke(app, ["data", "import-sample", "iris"])
    assert again.exit_code == 0 and "already there" in again.output and version in again.output
    listed = json.loads(runner.invoke(app, ["data", "list", "--json"]).output)
    assert version in [v["name"] for v in listed]
    assert version in runner.invoke(app, ["data", "list", "--dataset", "iris"]).output
    shown = runner.invoke(app, ["data", "show", version])
    assert shown.exit_code == 0 and "sepal length (cm)" in shown.output
    stats = json.loads(runner.invoke(app, ["data", "stats", version, "--json"]).output)
    assert [int(label["count"]) for label in stats["labels"]] == [50, 50, 50]
    table = runner.invoke(app, ["data", "stats", version])
    assert table.exit_code == 0 and "labels" in table.output


def test_upload_reports_rows_and_dropped_anomalies(services, tmp_path):
    path = tmp_path / "people.csv"
    path.write_text(CSV)
    uploaded = runner.invoke(
        app,
        ["data", "upload", str(path), "--label-column", "kind", "--split", "0.5,0.25,0.25"],
    )
    assert uploaded.exit_code == 0, uploaded.output
    assert "people@" in uploaded.output and "60 kept of 62 (2 dropped)" in uploaded.output
    assert "missing_value" in uploaded.output and "not_a_number" in uploaded.output
    as_json = json.loads(
        runner.invoke(
            app,
            [
                "data",
                "upload",
                str(path),
                "--label-column",
                "kind",
                "--split",
                "0.5,0.25,0.25",
                "--json",
            ],
        ).output
    )
    assert as_json["created"] is False and as_json["version"]["rows"]["dropped"] == "2"


def test_failures_name_the_problem(services, tmp_path):
    path = tmp_path / "people.csv"
    path.write_text(CSV)
    no_label = runner.invoke(app, ["data", "upload", str(path)])
    assert no_label.exit_code == 1 and "INVALID_ARGUMENT" in no_label.output
    assert "label" in no_label.output
    other = tmp_path / "people.txt"
    other.write_text(CSV)
    wrong_kind = runner.invoke(app, ["data", "upload", str(other)])
    assert wrong_kind.exit_code == 2 and "expected a .csv, .parquet" in wrong_kind.output
    missing = runner.invoke(app, ["data", "show", "iris@0123456789ab"])
    assert missing.exit_code == 1 and "NOT_FOUND" in missing.output
    unknown = runner.invoke(app, ["data", "import-sample", "mnist"])
    assert unknown.exit_code == 2 and "digits" in unknown.output
    bad_split = runner.invoke(app, ["data", "upload", str(path), "--split", "0.5,0.5"])
    assert bad_split.exit_code == 2 and "train,validation,test" in bad_split.output
