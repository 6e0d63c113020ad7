"""The data service's REST routes through the gateway app, against a real data server:
samples, streamed uploads, versions, statistics, and refusals as JSON."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq

from gateway.app import create_app
from gateway.backends import Backends
from tests.gateway.conftest import asgi_client

CSV = "\n".join(
    ["height,weight,kind"]
    + [f"{1.0 + i / 10:.2f},{50 + i},{'a' if i % 2 else 'b'}" for i in range(40)]
).encode()


async def test_import_sample_list_get_and_statistics(platform):
    first = await platform.post("/api/v1/datasets/samples", json={"sample": "iris"})
    assert first.status_code == 201, first.text
    version = first.json()["version"]
    assert version["name"].startswith("iris@") and first.json()["created"] is True
    assert version["rows"]["kept"] == "150"
    again = await platform.post("/api/v1/datasets/samples", json={"sample": "iris"})
    assert again.status_code == 200 and again.json()["created"] is False
    listed = (await platform.get("/api/v1/datasets", params={"dataset": "iris"})).json()
    assert [v["name"] for v in listed["versions"]] == [version["name"]]
    got = (await platform.get(f"/api/v1/datasets/{version['name']}")).json()["version"]
    assert got["schema"]["label"] == "target" and len(got["schema"]["features"]) == 4
    stats = (await platform.get(f"/api/v1/datasets/{version['name']}/statistics")).json()
    assert sum(int(label["count"]) for label in stats["labels"]) == 150
    assert len(stats["normalization"]["mean"]) == 4


async def test_streamed_csv_upload_becomes_a_version(platform):
    async def chunks():
        for start in range(0, len(CSV), 100):
            yield CSV[start : start + 100]

    uploaded = await platform.post(
        "/api/v1/datasets/body/versions",
        params={
            "format": "csv",
            "label_column": "kind",
            "train": 0.5,
            "validation": 0.25,
            "test": 0.25,
        },
        content=chunks(),
        headers={"content-type": "text/csv"},
    )
    assert uploaded.status_code == 201, uploaded.text
    version = uploaded.json()["version"]
    assert version["rows"]["total"] == "40" and version["schema"]["label_vocabulary"] == ["a", "b"]
    assert version["split_ratios"] == {"train": 0.5, "validation": 0.25, "test": 0.25}
    same = await platform.post(
        "/api/v1/datasets/body/versions",
        params={
            "format": "csv",
            "label_column": "kind",
            "train": 0.5,
            "validation": 0.25,
            "test": 0.25,
        },
        content=CSV,
    )
    assert same.status_code == 200 and same.json()["version"]["name"] == version["name"]


async def test_parquet_and_json_lines_uploads_make_the_csv_version_content(platform):
    rows = [
        {"height": round(1.0 + i / 10, 2), "weight": 50 + i, "kind": "a" if i % 2 else "b"}
        for i in range(40)
    ]
    parquet = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    bodies = {
        "csv": CSV,
        "parquet": parquet.getvalue(),
        "jsonl": "".join(json.dumps(row) + "\n" for row in rows).encode(),
    }
    versions = {}
    for data_format, body in bodies.items():
        uploaded = await platform.post(
            f"/api/v1/datasets/{data_format}/versions",
            params={"format": data_format, "label_column": "kind"},
            content=body,
        )
        assert uploaded.status_code == 201, uploaded.text
        versions[data_format] = uploaded.json()["version"]
    assert versions["parquet"]["format"] == "DATA_FORMAT_PARQUET"
    assert versions["jsonl"]["format"] == "DATA_FORMAT_JSONL"
    for field in ("schema", "rows"):
        assert versions["csv"][field] == versions["parquet"][field] == versions["jsonl"][field]
    corrupt = await platform.post(
        "/api/v1/datasets/corrupt/versions",
        params={"format": "parquet", "label_column": "kind"},
        content=parquet.getvalue()[:-100],
    )
    assert corrupt.status_code == 400, corrupt.text
    assert "unreadable Parquet" in corrupt.json()["error"]["message"]


async def test_refusals_are_json_with_field_violations(platform):
    no_label = await platform.post(
        "/api/v1/datasets/body/versions", params={"format": "csv"}, content=CSV
    )
    assert no_label.status_code == 400
    assert no_label.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert any("fieldViolations" in d for d in no_label.json()["error"]["details"])
    bad_format = await platform.post(
        "/api/v1/datasets/body/versions", params={"format": "xls"}, content=CSV
    )
    assert bad_format.status_code == 400 and "format" in bad_format.json()["error"]["message"]
    missing = await platform.get("/api/v1/datasets/iris@0123456789ab")
    assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"
    unknown_sample = await platform.post("/api/v1/datasets/samples", json={"sample": "mnist"})
    assert (
        unknown_sample.status_code == 400 and "sample" in unknown_sample.json()["error"]["message"]
    )
    not_the_message = await platform.post("/api/v1/datasets/samples", json={"sampel": "iris"})
    assert (
        not_the_message.status_code == 400
        and "sampel" in not_the_message.json()["error"]["message"]
    )
    not_json = await platform.post("/api/v1/datasets/samples", content=b"[1, 2")
    assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]["message"]


async def test_an_oversized_streamed_upload_is_413_and_nothing_is_stored(platform_settings):
    settings = platform_settings.model_copy(update={"max_body_bytes": 1024})
    async with asgi_client(create_app(settings, Backends(settings, None))) as client:

        async def chunks():
            for start in range(0, len(CSV) * 4, 256):
                yield (CSV * 4)[start : start + 256]

        big = await client.post(
            "/api/v1/datasets/big/versions",
            params={"format": "csv", "label_column": "kind"},
            content=chunks(),
        )
        assert big.status_code == 413 and big.json()["error"]["status"] == "PAYLOAD_TOO_LARGE"
        listed = await client.get("/api/v1/datasets", params={"dataset": "big"})
        assert listed.status_code == 200 and listed.json()["versions"] == []


async def test_delete_then_get_is_404(platform):
    version = (await platform.post("/api/v1/datasets/samples", json={"sample": "wine"})).json()[
        "version"
    ]["name"]
    deleted = await platform.delete(f"/api/v1/datasets/{version}")
    assert deleted.status_code == 200, deleted.text
    assert (await platform.get(f"/api/v1/datasets/{version}")).status_code == 404
