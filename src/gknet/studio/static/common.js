// Shared helpers of the studio pages: navigation highlight, session id, JSON requests.
"use strict";

// The header is built here so the three pages share one copy of it.
(function buildTopbar() {
  const bar = document.querySelector("header.topbar");
  bar.innerHTML = '<span class="brand">gknet studio<small>image harmonization</small></span><nav></nav>';
  const pages = [["/harmonize", "Harmonize"], ["/study", "Study"], ["/scores", "Scores"]];
  for (const [href, label] of pages) {
    const link = document.createElement("a");
    link.href = href;
    link.textContent = label;
    if (href === location.pathname) link.classList.add("active");
    bar.querySelector("nav").append(link);
  }
})();

// One anonymous id per browser, so the votes of one participant can be grouped.
function sessionId() {
  const key = "gknet-studio-session";
  let id = localStorage.getItem(key);
  if (!id) {
    id = (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random().toString(16).slice(2))
      .replace(/[^A-Za-z0-9_-]/g, "");
    localStorage.setItem(key, id);
  }
  return id;
}

// The server's one-sentence error ({"detail": ...}) as an Error.
async function responseError(response) {
  let detail = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.detail) detail = body.detail;
  } catch (_) { /* not JSON */ }
  return new Error(detail);
}

async function fetchJSON(url, options) {
  const response = await fetch(url, options);
  if (!response.ok) throw await responseError(response);
  return response.json();
}

function setStatus(element, text, kind) {
  element.textContent = text;
  element.className = "status" + (kind ? " " + kind : "");
}
