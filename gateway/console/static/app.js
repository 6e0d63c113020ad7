// The console's shell: hash routes to pages, the navigation, and the token prompt that
// appears when the gateway answers 401.

import { messageOf, onUnauthenticated, setToken, token } from "./api.js";
import { datasetPage, datasetsPage } from "./datasets.js";
import { h } from "./dom.js";
import { jobPage, jobsPage } from "./jobs.js";
import { comparePage, modelPage, modelsPage } from "./models.js";
import { servingPage, tryPage } from "./serving.js";

const ROUTES = [
  [/^#\/datasets\/(.+)$/, (m) => datasetPage(decodeURIComponent(m[1]))],
  [/^#\/datasets$/, () => datasetsPage()],
  [/^#\/jobs\/(.+)$/, (m) => jobPage(decodeURIComponent(m[1]))],
  [/^#\/jobs$/, () => jobsPage()],
  [/^#\/models\/([^/]+)\/compare\/(\d+)\/(\d+)$/, (m) => comparePage(decodeURIComponent(m[1]), m[2], m[3])],
  [/^#\/models\/([^/]+)$/, (m) => modelPage(decodeURIComponent(m[1]))],
  [/^#\/models$/, () => modelsPage()],
  [/^#\/serving(?:\/([^/]+))?$/, (m) => servingPage(m[1] && decodeURIComponent(m[1]))],
  [/^#\/try(?:\/([^/]+))?$/, (m) => tryPage(m[1] && decodeURIComponent(m[1]))],
];

let leaving = null;
// Each render's number: a page that finishes loading after a newer render began is dropped.
let rendering = 0;

async function render() {
  const hash = location.hash || "#/models";
  const main = document.getElementById("main");
  const mine = ++rendering;
  if (leaving) leaving();
  leaving = null;
  for (const link of document.querySelectorAll("header nav a")) {
    const current = hash.startsWith(link.getAttribute("href"));
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const route = ROUTES.find(([pattern]) => pattern.test(hash));
  main.replaceChildren(h("p", { class: "muted" }, "Loading..."));
  try {
    if (!route) throw new Error(`no page at ${hash}`);
    const page = await route[1](hash.match(route[0]));
    if (mine !== rendering) {
      if (page.leave) page.leave();
      return;
    }
    main.replaceChildren(...page.nodes);
    leaving = page.leave || null;
    document.title = `${page.title} - tfmesh console`;
  } catch (error) {
    if (mine !== rendering) return;
    main.replaceChildren(h("h1", {}, "Could not show this page"), h("div", { class: "error", role: "alert", "data-testid": "error" }, messageOf(error)));
  }
  main.focus();
}

function askForToken(reason) {
  const form = document.getElementById("token-form");
  document.getElementById("token-reason").textContent = reason;
  form.hidden = false;
  document.getElementById("token-input").focus();
}

onUnauthenticated((error) => askForToken(`The gateway refused the request (${error.code}: ${error.message}). Enter the bearer token.`));

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setToken(document.getElementById("token-input").value.trim());
  document.getElementById("token-form").hidden = true;
  render();
});
document.getElementById("token-clear").addEventListener("click", () => {
  setToken("");
  document.getElementById("token-input").value = "";
});
document.getElementById("token-button").addEventListener("click", () =>
  askForToken(token() ? "A token is set for this tab; enter another to replace it." : "No token is set."),
);
document.querySelector(".skip").addEventListener("click", (event) => {
  // The skip link moves focus only: the hash belongs to the router.
  event.preventDefault();
  document.getElementById("main").focus();
});
window.addEventListener("hashchange", render);
render();
