// Models: the registry's models; a model's versions with metrics, digests and lineage, its
// aliases with their audit history and gate decisions, its rollout, promotion; and two
// versions side by side (metrics, training curves, confusion matrices).

import { call, get, getAll, messageOf, optional, stream } from "./api.js";
import { confusionMatrix } from "./charts.js";
import { errorBox, field, h, link, messages, metric, table, when } from "./dom.js";
import { curveCharts, curvesOf, evaluationOf } from "./jobs.js";

const enc = encodeURIComponent;

export async function modelsPage() {
  const { models } = await get("/api/v1/models?page_size=200");
  const rows = models.map((m) => [
    link(`#/models/${enc(m.name)}`, m.name),
    m.latest_version,
    `${m.promotion_rule.metric} ${m.promotion_rule.higher_is_better ? "higher" : "lower"} is better, by >= ${m.promotion_rule.min_improvement}`,
    when(m.create_time),
    link(`#/serving/${enc(m.name)}`, "serving"),
  ]);
  return {
    title: "Models",
    nodes: [
      h("h1", {}, "Models"),
      table([{ title: "model" }, { title: "latest", numeric: true }, { title: "promotion gate" }, { title: "created" }, { title: "serving" }], rows, "models"),
    ],
  };
}

export async function promote(model, version, notes, { override = false, reason = "" } = {}) {
  const body = { version: Number(version), actor: "console", reason: reason || "promoted from the console", override_gate: override };
  try {
    await call("PUT", `/api/v1/models/${enc(model)}/aliases/production`, body);
    return true;
  } catch (error) {
    notes.show(errorBox(messageOf(error), "promote-error"));
    return false;
  }
}

export async function modelPage(name) {
  const base = `/api/v1/models/${enc(name)}`;
  const [{ model }, versions, { aliases }, changes, rollout] = await Promise.all([
    get(base),
    getAll(`${base}/versions`, "versions"),
    get(`${base}/aliases`),
    getAll(`${base}/alias-history`, "changes"),
    optional(`${base}/rollout`),
  ]);
  const notes = messages();
  const refresh = () => window.dispatchEvent(new HashChangeEvent("hashchange"));
  const overrideReason = h("input", { id: "override-reason", placeholder: "why the gate may be bypassed", required: true });

  const promoteButton = (v) =>
    h("button", {
      type: "button",
      "data-testid": `promote-${v.version}`,
      "aria-label": `Promote version ${v.version}`,
      onclick: async () => {
        if (!confirm(`Promote version ${v.version} of ${name} to production?`)) return;
        if (await promote(name, v.version, notes)) refresh();
      },
    }, "Promote");

  const versionRows = versions.slice().reverse().map((v) => [
    v.version,
    Object.entries(v.metrics).sort().map(([k, value]) => `${k}=${metric(value)}`).join(", "),
    v.artifacts.map((a) => h("div", {}, h("code", {}, `${a.name} sha256:${a.sha256.slice(0, 12)}`))),
    h("div", {},
      v.lineage.dataset_version ? link(`#/datasets/${enc(v.lineage.dataset_version)}`, v.lineage.dataset_version) : "",
      v.lineage.training_job ? h("div", {}, "job ", link(`#/jobs/${enc(v.lineage.training_job)}`, v.lineage.training_job)) : ""),
    Object.entries(v.params).map(([k, value]) => `${k}=${value}`).join(", "),
    v.aliases.join(", "),
    when(v.create_time),
    v.aliases.includes("production") ? "" : promoteButton(v),
  ]);

  const numbers = versions.map((v) => v.version);
  const pick = (id, chosen) => h("select", { id }, numbers.map((n) => h("option", { value: n, selected: n === chosen }, `v${n}`)));
  const left = pick("compare-a", numbers[Math.max(0, numbers.length - 2)]);
  const right = pick("compare-b", numbers[numbers.length - 1]);
  const compare = h("form", {
    class: "inline",
    "aria-label": "Compare two versions",
    onsubmit: (event) => {
      event.preventDefault();
      location.hash = `#/models/${enc(name)}/compare/${left.value}/${right.value}`;
    },
  }, field("Version", left), field("with", right), h("button", { type: "submit" }, "Compare"));

  const override = h("form", {
    class: "inline",
    "aria-label": "Promote past the gate",
    onsubmit: async (event) => {
      event.preventDefault();
      const version = document.getElementById("override-version").value;
      if (!confirm(`Promote version ${version} past the promotion gate? The override is audited.`)) return;
      if (await promote(name, version, notes, { override: true, reason: overrideReason.value })) refresh();
    },
  },
  field("Version", h("select", { id: "override-version" }, numbers.map((n) => h("option", { value: n }, `v${n}`)))),
  field("Reason (required)", overrideReason),
  h("button", { type: "submit", class: "secondary" }, "Promote past the gate"));

  const history = changes.slice().reverse().map((c) => [
    when(c.change_time),
    c.alias,
    c.old_version === "0" ? "-" : `v${c.old_version}`,
    c.new_version === "0" ? "deleted" : `v${c.new_version}`,
    c.alias === "canary" ? `${c.old_traffic_weight}% -> ${c.new_traffic_weight}%` : "",
    c.actor,
    c.overridden ? "gate overridden" : c.alias === "production" && c.new_version !== "0" ? "gate passed" : "",
    c.reason,
  ]);

  const nodes = [
    h("h1", {}, `Model ${name}`),
    h("p", {}, `Promotion gate: ${model.promotion_rule.metric} must ${model.promotion_rule.higher_is_better ? "rise" : "fall"} by at least ${model.promotion_rule.min_improvement}. `,
      link(`#/serving/${enc(name)}`, "Serving"), " - ", link(`#/try/${enc(name)}`, "Try it")),
    notes,
    h("h2", {}, "Versions"),
    table([{ title: "version", numeric: true }, { title: "metrics" }, { title: "artifacts" }, { title: "lineage" }, { title: "parameters" }, { title: "aliases" }, { title: "created" }, { title: "action" }], versionRows, "versions"),
    compare,
    override,
    h("h2", {}, "Aliases"),
    table([{ title: "alias" }, { title: "version", numeric: true }, { title: "traffic" }, { title: "since" }],
      aliases.map((a) => [a.name, a.version, a.name === "canary" ? `${a.traffic_weight}%` : "", when(a.update_time)]), "aliases"),
    h("h2", {}, "Audit history"),
    table([{ title: "when" }, { title: "alias" }, { title: "from" }, { title: "to" }, { title: "weight" }, { title: "who" }, { title: "gate" }, { title: "why" }], history, "audit"),
  ];
  if (rollout) {
    const r = rollout.rollout;
    nodes.push(
      h("h2", {}, `Rollout of v${r.version}: ${r.state.replace("STATE_", "").toLowerCase()}`),
      table([{ title: "when" }, { title: "event" }, { title: "weight" }, { title: "who" }, { title: "detail" }],
        r.events.map((e) => [when(e.event_time), e.kind, `${e.traffic_weight}%`, e.actor, e.detail]), "rollout"),
    );
  }
  return { title: `Model ${name}`, nodes };
}

async function curvesOfJob(job) {
  const events = [];
  if (job) {
    try {
      await stream(`/api/v1/jobs/${enc(job)}/events`, (event) => events.push(event));
    } catch {
      // A job the training service no longer has: no curves.
    }
  }
  return curvesOf(events);
}

export async function comparePage(name, a, b) {
  const base = `/api/v1/models/${enc(name)}/versions`;
  const [first, second] = await Promise.all([get(`${base}/${a}`), get(`${base}/${b}`)]);
  const pair = [first.version, second.version];
  const keys = [...new Set(pair.flatMap((v) => Object.keys(v.metrics)))].sort();
  const metricsTable = table(
    [{ title: "metric" }, { title: `v${a}`, numeric: true }, { title: `v${b}`, numeric: true }, { title: "difference", numeric: true }],
    keys.map((k) => {
      const [x, y] = pair.map((v) => v.metrics[k]);
      return [k, x === undefined ? "" : metric(x), y === undefined ? "" : metric(y), x === undefined || y === undefined ? "" : metric(y - x)];
    }),
    "compare-metrics",
  );
  const sides = await Promise.all(pair.map(async (v) => {
    const [curves, evaluation] = await Promise.all([curvesOfJob(v.lineage.training_job), evaluationOf(name, v.version)]);
    return h("section", { "aria-label": `version ${v.version}` },
      h("h2", {}, `v${v.version}`),
      h("p", { class: "muted" }, `dataset ${v.lineage.dataset_version || "?"}, job ${v.lineage.training_job || "?"}`),
      ...curveCharts(curves, `v${v.version} `),
      evaluation ? h("div", { class: "scroll" }, confusionMatrix(evaluation, `v${v.version}`)) : h("p", { class: "muted" }, "no confusion matrix registered"));
  }));
  return {
    title: `Compare v${a} and v${b}`,
    nodes: [h("h1", {}, `${name}: v${a} and v${b} side by side`), link(`#/models/${enc(name)}`, `back to ${name}`), h("h2", {}, "Metrics"), metricsTable, h("div", { class: "side-by-side" }, sides)],
  };
}
