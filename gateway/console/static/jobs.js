// Training jobs: the list with states, submitting a job, and a job's page with its live
// progress (the NDJSON event stream), training curves per epoch and trial, the final
// evaluation with its confusion matrix, and a cancel button.

import { call, get, messageOf, optional, stream } from "./api.js";
import { confusionMatrix, lineChart } from "./charts.js";
import { errorBox, field, h, link, messages, metric, table, when } from "./dom.js";

const ENDED = ["JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"];
const stateName = (state) => state.replace("JOB_STATE_", "").toLowerCase();

export async function jobsPage() {
  const [{ jobs }, { versions }] = await Promise.all([get("/api/v1/jobs?page_size=100"), get("/api/v1/datasets?page_size=200")]);
  const notes = messages();
  const dataset = h("select", { id: "job-dataset", required: true }, versions.map((v) => h("option", { value: v.name }, v.name)));
  const model = h("input", { id: "job-model", value: "digits", required: true });
  const hidden = h("input", { id: "job-hidden", value: "32", inputmode: "numeric" });
  const epochs = h("input", { id: "job-epochs", type: "number", value: "5", min: "1" });
  const rate = h("input", { id: "job-rate", type: "number", value: "0.01", step: "any" });
  const form = h(
    "form",
    {
      class: "inline",
      "aria-label": "Start a training job",
      onsubmit: async (event) => {
        event.preventDefault();
        const spec = {
          dataset_version: dataset.value,
          model_name: model.value,
          model: { mlp: { hidden_units: hidden.value.split(",").map((u) => u.trim()).filter(Boolean) } },
          hyperparameters: { optimizer: "OPTIMIZER_ADAM", learning_rate: rate.value, epochs: epochs.value, batch_size: 32 },
          seed: 7,
        };
        try {
          const answer = await call("POST", "/api/v1/jobs", { spec });
          location.hash = `#/jobs/${encodeURIComponent(answer.job.name)}`;
        } catch (error) {
          notes.show(errorBox(messageOf(error)));
        }
      },
    },
    field("Dataset version", dataset),
    field("Register as model", model),
    field("Hidden units (comma-separated)", hidden),
    field("Epochs", epochs),
    field("Learning rate", rate),
    h("button", { type: "submit" }, "Start training"),
  );
  const rows = jobs.map((j) => [
    link(`#/jobs/${encodeURIComponent(j.name)}`, j.name),
    j.spec.model_name,
    j.spec.dataset_version,
    stateName(j.state),
    j.phase,
    `${j.epochs_completed}/${j.epochs}`,
    when(j.create_time),
  ]);
  return {
    title: "Training jobs",
    nodes: [
      h("h1", {}, "Training jobs"),
      form,
      notes,
      table(
        [{ title: "job" }, { title: "model" }, { title: "dataset" }, { title: "state" }, { title: "phase" }, { title: "epochs" }, { title: "created" }],
        rows,
        "jobs",
      ),
    ],
  };
}

// The epochs of a job's event stream, by trial (0: the final training).
export function curvesOf(events) {
  const byTrial = new Map();
  for (const event of events) {
    if (!event.epoch) continue;
    const { trial, epoch, metrics } = event.epoch;
    if (!byTrial.has(trial)) byTrial.set(trial, []);
    byTrial.get(trial).push([epoch, metrics]);
  }
  return byTrial;
}

export function curveCharts(byTrial, prefix = "") {
  const charts = [];
  for (const name of ["loss", "accuracy"]) {
    const series = [];
    for (const [trial, epochs] of [...byTrial.entries()].sort((a, b) => a[0] - b[0])) {
      const label = trial ? `trial ${trial}` : "final";
      for (const key of [name, `val_${name}`]) {
        const points = epochs.filter(([, m]) => key in m).map(([e, m]) => [e, m[key]]);
        if (points.length) series.push({ name: `${prefix}${label} ${key}`, points });
      }
    }
    charts.push(lineChart(`${prefix}${name} per epoch`, series));
  }
  return charts;
}

// A version's registered evaluation (its confusion matrix); null when it has none.
export function evaluationOf(model, version) {
  return optional(`/api/v1/models/${encodeURIComponent(model)}/versions/${version}/artifacts/evaluation.json`);
}

export async function jobPage(name) {
  const path = `/api/v1/jobs/${encodeURIComponent(name)}`;
  let { job } = await get(path);
  const events = [];
  const bar = h("progress", { id: "job-progress", max: "100", value: "0", "aria-label": "training progress" });
  const progressText = h("span", { "data-testid": "progress-text" }, "0%");
  const stateText = h("span", { "data-testid": "job-state" }, stateName(job.state));
  const phaseText = h("span", { class: "muted" }, job.phase);
  const curves = h("div", { class: "side-by-side", "data-testid": "curves" });
  const outcome = h("div", { "data-testid": "outcome" });
  const notes = messages();
  const controller = new AbortController();

  const update = () => {
    const final = events.filter((e) => e.epoch && e.epoch.trial === 0);
    const last = final[final.length - 1];
    let done = last ? last.epoch.epoch / last.epoch.epochs : 0;
    if (job.state === "JOB_STATE_SUCCEEDED") done = 1;
    bar.value = Math.round(done * 100);
    progressText.textContent = `${Math.round(done * 100)}%`;
    stateText.textContent = stateName(job.state);
    phaseText.textContent = job.phase ? `(${job.phase})` : "";
    curves.replaceChildren(...curveCharts(curvesOf(events)).map((c) => h("section", {}, c)));
  };

  const showOutcome = async () => {
    const parts = [h("h2", {}, "Final evaluation")];
    parts.push(table([{ title: "metric" }, { title: "value", numeric: true }], Object.entries(job.metrics).sort().map(([k, v]) => [k, metric(v)]), "job-metrics"));
    if (job.trials.length) {
      parts.push(h("h2", {}, "Trials"), table([{ title: "trial", numeric: true }, { title: "params" }, { title: "objective", numeric: true }],
        job.trials.map((t) => [t.number + 1, Object.entries(t.params).map(([k, v]) => `${k}=${v}`).join(", "), metric(t.objective)]), "trials"));
    }
    const registration = job.registration;
    if (registration && Number(registration.version)) {
      parts.push(h("p", {}, "Registered as ", link(`#/models/${encodeURIComponent(registration.model)}`, `${registration.model} v${registration.version}`),
        registration.promoted ? " (promoted to production)" : ""));
      const evaluation = await evaluationOf(registration.model, registration.version);
      if (evaluation) parts.push(h("h2", {}, "Confusion matrix"), h("div", { class: "scroll" }, confusionMatrix(evaluation, `v${registration.version} on the test split`)));
    }
    if (job.error) parts.push(errorBox(`The job failed: ${job.error}`));
    outcome.replaceChildren(...parts);
  };

  const cancel = h("button", {
    type: "button",
    class: "danger",
    onclick: async () => {
      if (!confirm(`Cancel training job ${name}?`)) return;
      try {
        await call("POST", `${path}/cancel`);
        notes.show(h("p", { class: "ok" }, "Cancellation requested"));
      } catch (error) {
        notes.show(errorBox(messageOf(error)));
      }
    },
  }, "Cancel job");

  const follow = async () => {
    try {
      // The gateway ends a stream at its deadline: follow again from the last event seen.
      let since = 0;
      while (!ENDED.includes(job.state) && !controller.signal.aborted) {
        await stream(`${path}/events?since_sequence=${since}`, (event) => {
          if (event.error) {
            notes.show(errorBox(`${event.error.status}: ${event.error.message}`));
            return;
          }
          since = Number(event.sequence);
          events.push(event);
          if (event.state_change) job = { ...job, state: event.state_change.state };
          update();
        }, controller.signal);
        if (!ENDED.includes(job.state)) {
          await new Promise((resolve) => setTimeout(resolve, 1000));
          job = (await get(path)).job;
        }
      }
      job = (await get(path)).job;
      update();
      cancel.disabled = ENDED.includes(job.state);
      if (ENDED.includes(job.state)) await showOutcome();
    } catch (error) {
      if (!controller.signal.aborted) notes.show(errorBox(messageOf(error)));
    }
  };
  update();
  follow();
  return {
    title: `Job ${name}`,
    leave: () => controller.abort(),
    nodes: [
      h("h1", {}, `Training job ${name}`),
      h("p", {}, `model ${job.spec.model_name} on `, link(`#/datasets/${encodeURIComponent(job.spec.dataset_version)}`, job.spec.dataset_version), ` - created ${when(job.create_time)}`),
      h("p", {}, "State: ", stateText, " ", phaseText),
      h("p", {}, bar, " ", progressText),
      cancel,
      notes,
      h("h2", {}, "Training curves"),
      curves,
      outcome,
    ],
  };
}
