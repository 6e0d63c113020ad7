// Small SVG charts drawn in the page (no library): line charts of training curves, feature
// histograms, and confusion matrices as tables shaded by count.

const NS = "http://www.w3.org/2000/svg";
const COLOURS = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7b83"];

function svg(width, height, label) {
  const root = document.createElementNS(NS, "svg");
  root.setAttribute("viewBox", `0 0 ${width} ${height}`);
  root.setAttribute("width", "100%");
  root.setAttribute("role", "img");
  root.setAttribute("aria-label", label);
  root.style.maxWidth = `${width}px`;
  return root;
}

function element(name, attributes, text) {
  const node = document.createElementNS(NS, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

// series: [{name, points: [[x, y], ...]}]
export function lineChart(title, series, { width = 480, height = 240 } = {}) {
  const figure = document.createElement("figure");
  const caption = document.createElement("figcaption");
  caption.textContent = title;
  figure.append(caption);
  const points = series.flatMap((s) => s.points);
  const root = svg(width, height, title);
  figure.append(root);
  if (!points.length) {
    caption.textContent += " (no epochs yet)";
    return figure;
  }
  const left = 40, right = 10, top = 10, bottom = 40;
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs, Math.min(...xs) + 1)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y0 === y1) [y0, y1] = [y0 - 0.5, y1 + 0.5];
  const x = (v) => left + ((v - x0) / (x1 - x0)) * (width - left - right);
  const y = (v) => top + (1 - (v - y0) / (y1 - y0)) * (height - top - bottom);
  root.append(element("line", { x1: left, y1: height - bottom, x2: width - right, y2: height - bottom, stroke: "#9aa8b6" }));
  root.append(element("line", { x1: left, y1: top, x2: left, y2: height - bottom, stroke: "#9aa8b6" }));
  root.append(element("text", { x: 2, y: top + 8 }, y1.toPrecision(3)));
  root.append(element("text", { x: 2, y: height - bottom }, y0.toPrecision(3)));
  root.append(element("text", { x: width / 2, y: height - bottom + 14 }, "epoch"));
  series.forEach((s, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const path = s.points.map((p, j) => `${j ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    root.append(element("path", { d: path, fill: "none", stroke: colour, "stroke-width": 2 }));
    root.append(element("text", { x: left + 4 + (i % 3) * 145, y: height - 6 - Math.floor(i / 3) * 12, fill: colour }, s.name));
  });
  return figure;
}

export function histogram(edges, counts, label) {
  const width = 120, height = 32;
  const root = svg(width, height, label);
  root.classList.add("hist");
  root.style.width = `${width}px`;
  const most = Math.max(1, ...counts);
  const bar = width / Math.max(1, counts.length);
  counts.forEach((count, i) => {
    const h = (Number(count) / most) * (height - 2);
    root.append(element("rect", { x: i * bar, y: height - h, width: Math.max(1, bar - 1), height: h, fill: "#1f6feb" }));
  });
  return root;
}

export function confusionMatrix(evaluation, caption) {
  const table = document.createElement("table");
  table.className = "matrix";
  table.dataset.testid = "confusion-matrix";
  const head = table.createCaption();
  head.textContent = `${caption}: rows are true classes, columns predicted (${evaluation.rows} test rows, accuracy ${(evaluation.accuracy * 100).toFixed(1)}%)`;
  const matrix = evaluation.confusion_matrix;
  const most = Math.max(1, ...matrix.flat());
  const header = table.insertRow();
  header.append(Object.assign(document.createElement("th"), { textContent: "true \\ predicted", scope: "col" }));
  for (const name of evaluation.classes) header.append(Object.assign(document.createElement("th"), { textContent: name, scope: "col" }));
  matrix.forEach((row, i) => {
    const tr = table.insertRow();
    tr.append(Object.assign(document.createElement("th"), { textContent: evaluation.classes[i], scope: "row" }));
    row.forEach((count, j) => {
      const td = tr.insertCell();
      td.textContent = count;
      const shade = count / most;
      td.style.background = i === j ? `rgba(26,127,55,${0.15 + 0.6 * shade})` : count ? `rgba(209,36,47,${0.15 + 0.6 * shade})` : "";
    });
  });
  return table;
}
