// Building the pages: elements, tables, messages, and the formats the pages share.

export function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// columns: [{title, numeric?}], rows: arrays of cells (text or nodes)
export function table(columns, rows, testid) {
  const node = h("table", { "data-testid": testid });
  const head = node.createTHead().insertRow();
  for (const column of columns) head.append(h("th", { scope: "col", class: column.numeric ? "num" : undefined }, column.title));
  const body = node.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    row.forEach((cell, i) => {
      const td = tr.insertCell();
      if (columns[i] && columns[i].numeric) td.className = "num";
      for (const part of Array.isArray(cell) ? cell : [cell]) {
        td.append(part instanceof Node ? part : document.createTextNode(part === undefined || part === null ? "" : String(part)));
      }
    });
  }
  if (!rows.length) body.insertRow().insertCell().append(h("span", { class: "muted" }, "none"));
  return h("div", { class: "scroll" }, node);
}

export function errorBox(text, testid = "error") {
  return h("div", { class: "error", role: "alert", "data-testid": testid }, text);
}

export function okBox(text, testid = "ok") {
  return h("div", { class: "ok", role: "status", "data-testid": testid }, text);
}

export function when(stamp) {
  return stamp ? new Date(stamp).toLocaleString() : "";
}

export function percent(ratio) {
  return Number.isFinite(ratio) ? `${(ratio * 100).toFixed(1)}%` : "";
}

export function metric(value) {
  const number = Number(value);
  return Number.isInteger(number) ? String(number) : number.toFixed(4);
}

export function link(href, text) {
  return h("a", { href }, text);
}

// A message area: `show` replaces what it says.
export function messages() {
  const area = h("div", { "aria-live": "polite" });
  area.show = (node) => area.replaceChildren(node);
  area.clear = () => area.replaceChildren();
  return area;
}

// A labelled control: its label beside it, tied by the control's id.
export function field(text, control) {
  return h("div", { class: "field" }, h("label", { for: control.id }, text), control);
}
