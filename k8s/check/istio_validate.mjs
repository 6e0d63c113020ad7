// Validates Istio resources against Istio's published CRD schemas, compiled into
// @kubernetes-models/istio. Reads a JSON array of resources on stdin and writes a JSON
// array with one entry per resource: {"errors": [{"path", "message"}]}, empty when valid,
// or {"unknown": true} when the package has no model for its apiVersion and kind.
import { readFileSync } from "node:fs";

const GROUPS = {
  "networking.istio.io": "@kubernetes-models/istio/networking.istio.io",
  "security.istio.io": "@kubernetes-models/istio/security.istio.io",
  "telemetry.istio.io": "@kubernetes-models/istio/telemetry.istio.io",
  "install.istio.io": "@kubernetes-models/istio/install.istio.io",
  "extensions.istio.io": "@kubernetes-models/istio/extensions.istio.io",
};

async function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.split("/");
  const base = GROUPS[group];
  if (!base || !version) return null;
  try {
    const module = await import(`${base}/${version}/${kind}`);
    return module[kind] ?? null;
  } catch {
    return null;
  }
}

const resources = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const resource of resources) {
  const Model = await modelFor(resource.apiVersion ?? "", resource.kind ?? "");
  if (Model === null) {
    results.push({ unknown: true });
    continue;
  }
  try {
    new Model(resource).validate();
    results.push({ errors: [] });
  } catch (error) {
    const details = error.errors ?? [{ instancePath: "", message: String(error.message) }];
    results.push({
      errors: details.map((detail) => ({
        path: detail.instancePath ?? "",
        message: detail.message ?? String(detail),
      })),
    });
  }
}
process.stdout.write(JSON.stringify(results));
