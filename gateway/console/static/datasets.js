// Datasets: every version with its rows; a version's schema, anomalies, splits and
// per-feature statistics with histograms; importing a bundled sample.

import { call, get, messageOf } from "./api.js";
import { histogram } from "./charts.js";
import { errorBox, field, h, link, messages, metric, table, when } from "./dom.js";

const SAMPLES = ["digits", "iris", "wine", "breast_cancer"];

export async function datasetsPage() {
  const { versions } = await get("/api/v1/datasets?page_size=200");
  const notes = messages();
  const sample = h("select", { id: "sample-select", name: "sample" }, SAMPLES.map((s) => h("option", { value: s }, s)));
  const form = h(
    "form",
    {
      class: "inline",
      "aria-label": "Import a sample dataset",
      onsubmit: async (event) => {
        event.preventDefault();
        notes.show(h("p", { class: "muted" }, "Importing..."));
        try {
          const answer = await call("POST", "/api/v1/datasets/samples", { sample: sample.value });
          location.hash = `#/datasets/${encodeURIComponent(answer.version.name)}`;
        } catch (error) {
          notes.show(errorBox(messageOf(error)));
        }
      },
    },
    field("Sample", sample),
    h("button", { type: "submit" }, "Import sample"),
  );
  const rows = versions.map((v) => [
    link(`#/datasets/${encodeURIComponent(v.name)}`, v.name),
    v.rows.kept,
    `${v.rows.train} / ${v.rows.validation} / ${v.rows.test}`,
    v.anomalies.bad_rows,
    when(v.create_time),
  ]);
  return {
    title: "Datasets",
    nodes: [
      h("h1", {}, "Datasets"),
      form,
      notes,
      table(
        [{ title: "version" }, { title: "rows", numeric: true }, { title: "train / validation / test" }, { title: "bad rows", numeric: true }, { title: "created" }],
        rows,
        "datasets",
      ),
    ],
  };
}

export async function datasetPage(name) {
  const [{ version }, statistics] = await Promise.all([
    get(`/api/v1/datasets/${encodeURIComponent(name)}`),
    get(`/api/v1/datasets/${encodeURIComponent(name)}/statistics`),
  ]);
  const schema = version.schema;
  const anomalies = version.anomalies;
  const ratios = version.split_ratios;
  const features = statistics.features.map((f) => [
    f.name,
    f.type.replace("FEATURE_TYPE_", "").toLowerCase(),
    f.count,
    f.missing,
    f.invalid,
    metric(f.mean),
    metric(f.std),
    `${metric(f.min)} .. ${metric(f.max)}`,
    f.histogram && f.histogram.counts.length
      ? histogram(f.histogram.edges, f.histogram.counts.map(Number), `histogram of ${f.name}`)
      : (f.top_values || []).map((t) => `${t.value}: ${t.count}`).join(", "),
  ]);
  return {
    title: name,
    nodes: [
      h("h1", {}, `Dataset version ${name}`),
      h("p", { class: "muted" }, `digest ${version.digest.slice(0, 16)}..., ${version.format.replace("DATA_FORMAT_", "")}, created ${when(version.create_time)}`),
      h("h2", {}, "Splits"),
      table(
        [{ title: "split" }, { title: "ratio", numeric: true }, { title: "rows", numeric: true }],
        [
          ["train", ratios.train, version.rows.train],
          ["validation", ratios.validation, version.rows.validation],
          ["test", ratios.test, version.rows.test],
        ],
        "splits",
      ),
      h("h2", {}, "Schema"),
      h("p", {}, `feature shape [${schema.feature_shape.join(", ")}], label ${schema.label}, classes ${schema.label_vocabulary.join(", ")}`),
      h("h2", {}, "Anomalies"),
      h("p", {}, `${anomalies.bad_rows} bad rows dropped of ${version.rows.total}`),
      table(
        [{ title: "row", numeric: true }, { title: "column" }, { title: "kind" }, { title: "detail" }],
        anomalies.examples.map((a) => [a.row, a.column, a.kind.replace("ANOMALY_KIND_", "").toLowerCase(), a.detail]),
        "anomalies",
      ),
      h("h2", {}, "Statistics"),
      table(
        [
          { title: "feature" }, { title: "type" }, { title: "count", numeric: true }, { title: "missing", numeric: true },
          { title: "invalid", numeric: true }, { title: "mean", numeric: true }, { title: "std", numeric: true },
          { title: "range" }, { title: "distribution" },
        ],
        features,
        "statistics",
      ),
      h("h2", {}, "Labels"),
      table([{ title: "label" }, { title: "count", numeric: true }], (statistics.labels || []).map((l) => [l.label, l.count]), "labels"),
    ],
  };
}
