// Serving: what the inference service has loaded per model, the live split of traffic and
// each version's latency, errors, queue and live accuracy, with the actions that move it
// (canary weight, promote, roll back; each confirmed, then visible in the audit log); and
// "Try it", a prediction sent from the page.

import { call, get, getAll, messageOf } from "./api.js";
import { errorBox, field, h, link, messages, okBox, percent, table, when } from "./dom.js";
import { imagePad } from "./sketch.js";

const enc = encodeURIComponent;
// A handwritten zero from scikit-learn's digits (8 x 8 grey levels, 0-16).
const DIGIT_ZERO = [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12, 0, 0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0];

function quantile(stats, q) {
  const counts = stats.latency_counts.map(Number);
  const total = counts.reduce((a, b) => a + b, 0);
  if (!total) return NaN;
  let running = 0;
  for (let i = 0; i < counts.length; i++) {
    running += counts[i];
    if (running >= q * total) return stats.latency_bounds_seconds[i] ?? Infinity;
  }
  return Infinity;
}

const ms = (seconds) => (Number.isFinite(seconds) ? `${(seconds * 1000).toFixed(2)} ms` : "");

async function chooseModel(model, page) {
  if (model) return model;
  const { models } = await get("/api/v1/serving");
  if (!models.length) throw new Error("the inference service serves no model yet");
  location.replace(`#/${page}/${enc(models[0].name)}`);
  return models[0].name;
}

export async function servingPage(requested) {
  const name = await chooseModel(requested, "serving");
  const [{ status }, { versions: stats }, versions, { aliases }, changes] = await Promise.all([
    get(`/api/v1/serving/${enc(name)}`),
    get(`/api/v1/serving/${enc(name)}/stats`),
    getAll(`/api/v1/models/${enc(name)}/versions`, "versions"),
    get(`/api/v1/models/${enc(name)}/aliases`),
    getAll(`/api/v1/models/${enc(name)}/alias-history`, "changes"),
  ]);
  const notes = messages();
  const byVersion = new Map(stats.map((s) => [s.version, s]));
  const total = stats.reduce((sum, s) => sum + Number(s.requests), 0);
  const rows = status.versions.map((v) => {
    const s = byVersion.get(v.version);
    const feedback = s && s.feedback;
    return [
      v.version,
      v.state.replace("STATE_", "").toLowerCase(),
      v.labels.join(", "),
      s ? s.requests : "",
      s && total ? percent(Number(s.requests) / total) : "",
      s ? ms(quantile(s, 0.5)) : "",
      s ? ms(quantile(s, 0.99)) : "",
      s ? s.model_errors : "",
      v.queued_rows,
      feedback && Number(feedback.classified_rows)
        ? `${percent(Number(feedback.correct_rows) / Number(feedback.classified_rows))} of ${feedback.classified_rows}`
        : "",
    ];
  });
  const canary = aliases.find((a) => a.name === "canary");
  const production = aliases.find((a) => a.name === "production");
  const base = `/api/v1/models/${enc(name)}/aliases`;
  const refresh = () => window.dispatchEvent(new HashChangeEvent("hashchange"));
  const act = async (question, steps, done) => {
    if (!confirm(question)) return;
    try {
      for (const step of steps) await step();
      sessionStorage.setItem("tfmesh-done", done);
      refresh();
    } catch (error) {
      notes.show(errorBox(messageOf(error), "action-error"));
    }
  };
  const canaryVersion = h("select", { id: "canary-version" }, versions.map((v) => h("option", { value: v.version, selected: canary ? v.version === canary.version : undefined }, `v${v.version}`)));
  const weight = h("input", { id: "canary-weight", inputmode: "numeric", value: canary ? String(canary.traffic_weight) : "20", size: "5" });
  const canaryForm = h("form", {
    class: "inline",
    "aria-label": "Set the canary",
    onsubmit: (event) => {
      event.preventDefault();
      const body = { version: Number(canaryVersion.value), actor: "console", reason: "canary set from the console" };
      // The weight goes as typed: the API says what is wrong with it.
      const raw = JSON.stringify(body).replace(/}$/, `,"traffic_weight":${JSON.stringify(weight.value)}}`);
      act(`Send ${weight.value}% of unpinned traffic to v${canaryVersion.value}?`,
        [() => call("PUT", `${base}/canary`, raw, { raw: true })], `canary v${canaryVersion.value} at ${weight.value}%`);
    },
  },
  field("Canary version", canaryVersion),
  field("Traffic weight (%)", weight),
  h("button", { type: "submit" }, "Set canary"));
  const buttons = h("div", { class: "inline" },
    h("button", {
      type: "button",
      id: "promote-canary",
      disabled: !canary,
      onclick: () => act(`Promote the canary v${canary.version} to production?`, [
        () => call("PUT", `${base}/production`, { version: Number(canary.version), actor: "console", reason: "canary promoted from the console" }),
        () => call("DELETE", `${base}/canary?actor=console&reason=${enc("promoted")}`),
      ], `v${canary && canary.version} promoted`),
    }, "Promote canary"),
    " ",
    h("button", {
      type: "button",
      id: "roll-back",
      class: "danger",
      disabled: !canary,
      onclick: () => act(`Roll back: remove the canary v${canary.version}? Production v${production ? production.version : "?"} takes all traffic.`,
        [() => call("DELETE", `${base}/canary?actor=console&reason=${enc("rolled back from the console")}`)], "canary rolled back"),
    }, "Roll back canary"));
  const done = sessionStorage.getItem("tfmesh-done");
  sessionStorage.removeItem("tfmesh-done");
  if (done) notes.show(okBox(`Done: ${done}.`, "action-done"));
  const recent = changes.slice(-8).reverse().map((c) => [
    when(c.change_time), c.alias, c.new_version === "0" ? "deleted" : `v${c.new_version}`,
    c.alias === "canary" ? `${c.new_traffic_weight}%` : "", c.actor, c.reason,
  ]);
  return {
    title: `Serving ${name}`,
    nodes: [
      h("h1", {}, `Serving ${name}`),
      h("p", {}, `Canary weight ${status.canary_weight}% of unpinned requests. `, link(`#/models/${enc(name)}`, "Model"), " - ", link(`#/try/${enc(name)}`, "Try it")),
      notes,
      h("h2", {}, "Loaded versions and live traffic"),
      table([
        { title: "version", numeric: true }, { title: "state" }, { title: "labels" }, { title: "requests", numeric: true },
        { title: "share", numeric: true }, { title: "p50", numeric: true }, { title: "p99", numeric: true },
        { title: "model errors", numeric: true }, { title: "queued rows", numeric: true }, { title: "live accuracy" },
      ], rows, "serving-versions"),
      h("p", { class: "muted" }, "Figures since each version was loaded, from the inference service."),
      h("h2", {}, "Traffic"),
      canaryForm,
      buttons,
      h("h2", {}, "Recent alias changes"),
      table([{ title: "when" }, { title: "alias" }, { title: "to" }, { title: "weight" }, { title: "who" }, { title: "why" }], recent, "recent-changes"),
    ],
  };
}

// The largest value of the version's training data (its first feature), so a drawing is
// scaled as the model saw its inputs; 1 when the lineage or statistics cannot be read.
async function inputRange(model, version) {
  try {
    const { version: found } = await get(`/api/v1/models/${enc(model)}/versions/${version}`);
    const dataset = found.lineage.dataset_version;
    if (!dataset) return 1;
    const statistics = await get(`/api/v1/datasets/${enc(dataset)}/statistics`);
    const largest = Number(statistics.features[0] && statistics.features[0].max);
    return Number.isFinite(largest) && largest > 0 ? largest : 1;
  } catch {
    return 1;
  }
}

export async function tryPage(requested) {
  const name = await chooseModel(requested, "try");
  const { status } = await get(`/api/v1/serving/${enc(name)}`);
  const loaded = status.versions.find((v) => v.inputs.length);
  if (!loaded) throw new Error(`no version of ${name} is loaded yet`);
  const input = loaded.inputs[0];
  const dims = input.shape.slice(1).map(Number);
  const size = dims.reduce((a, b) => a * b, 1);
  const example = size === DIGIT_ZERO.length ? DIGIT_ZERO : new Array(size).fill(0);
  const row = h("textarea", { id: "try-row", spellcheck: "false" }, JSON.stringify(example));
  const pin = h("input", { id: "try-version", inputmode: "numeric", placeholder: "production or canary by weight", size: "28" });
  const answer = messages();
  const form = h("form", {
    "aria-label": "Send a prediction",
    onsubmit: async (event) => {
      event.preventDefault();
      answer.show(h("p", { class: "muted", "data-testid": "predicting" }, "Predicting..."));
      // The row goes as typed inside the request, so a malformed one gets the API's message.
      const version = pin.value.trim() ? `,"version":${JSON.stringify(pin.value.trim())}` : "";
      const body = `{"inputs":{${JSON.stringify(input.name)}:{"dtype":"float32","shape":${JSON.stringify([1, ...dims])},"data":${row.value}}}${version}}`;
      try {
        const reply = await call("POST", `/api/v1/models/${enc(name)}/predict`, body, { raw: true });
        const [outputName, output] = Object.entries(reply.outputs)[0];
        const values = output.data.flat(Infinity).map(Number);
        const best = values.indexOf(Math.max(...values));
        answer.show(h("div", { class: "ok", "data-testid": "prediction" },
          h("p", {}, "Predicted class ", h("strong", { "data-testid": "predicted-class" }, best), " by version ",
            h("strong", { "data-testid": "served-version" }, reply.version)),
          h("p", { class: "muted" }, `request id ${reply.request_id}; ${outputName}:`),
          table([{ title: "class", numeric: true }, { title: "score", numeric: true }], values.map((v, i) => [i, v.toFixed(4)]), "scores")));
      } catch (error) {
        answer.show(errorBox(messageOf(error), "try-error"));
      }
    },
  },
  h("label", { for: "try-row" }, `Input ${input.name}: ${size} numbers (shape [${dims.join(", ")}]) as JSON`),
  row,
  h("p", {}, h("label", { for: "try-version" }, "Pin a version (optional)"), " ", pin),
  h("button", { type: "submit" }, "Predict"));
  const image = dims.length === 2 || (dims.length === 3 && [1, 3].includes(dims[2]));
  const pad = image
    ? imagePad(dims[0], dims[1], dims[2] || 1, await inputRange(name, loaded.version), (values) => {
        row.value = JSON.stringify(values);
        row.focus();
      })
    : null;
  return {
    title: `Try ${name}`,
    nodes: [h("h1", {}, `Try ${name}`), h("p", {}, link(`#/serving/${enc(name)}`, "Serving")), pad, form, answer],
  };
}
