// Scores page: table and bar chart of the Bradley-Terry scores of the votes so far.
"use strict";

const $ = (id) => document.getElementById(id);
const fmt = (value) => (value === null ? "–" : (value >= 0 ? "+" : "") + value.toFixed(3));

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function renderTable(rows) {
  const body = $("table").querySelector("tbody");
  body.replaceChildren(...rows.map((row) => {
    const tr = document.createElement("tr");
    const interval = row.low === null ? "–" : `[${fmt(row.low)}, ${fmt(row.high)}]`;
    const rate = row.comparisons ? `${((100 * row.wins) / row.comparisons).toFixed(1)}%` : "–";
    tr.append(cell(row.method), cell(fmt(row.score), "num"), cell(interval, "num"), cell(row.wins, "num"),
      cell(row.comparisons, "num"), cell(rate, "num"));
    return tr;
  }));
}

function renderBars(rows) {
  const bars = $("bars");
  bars.hidden = rows.length === 0;
  const extent = Math.max(0.1, ...rows.flatMap((r) => [r.score, r.low, r.high].filter((v) => v !== null).map(Math.abs)));
  const x = (value) => 50 + (value / extent) * 48; // percent of the track, 0 in the middle
  bars.replaceChildren(...rows.map((row) => {
    const line = document.createElement("div");
    line.className = "bar-row";
    const track = document.createElement("div");
    track.className = "bar-track";
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.left = `${Math.min(x(0), x(row.score))}%`;
    bar.style.width = `${Math.abs(x(row.score) - x(0))}%`;
    const zero = document.createElement("div");
    zero.className = "bar-zero";
    zero.style.left = "50%";
    track.append(bar, zero);
    if (row.low !== null) {
      const whisker = document.createElement("div");
      whisker.className = "whisker";
      whisker.style.left = `${x(row.low)}%`;
      whisker.style.width = `${x(row.high) - x(row.low)}%`;
      track.append(whisker);
    }
    const name = document.createElement("span");
    name.textContent = row.method;
    const value = document.createElement("span");
    value.textContent = fmt(row.score);
    value.className = "num";
    line.append(name, track, value);
    return line;
  }));
}

async function refresh() {
  try {
    const scores = await fetchJSON("/api/scores");
    $("summary").textContent = scores.votes
      ? `${scores.votes} vote${scores.votes === 1 ? "" : "s"} from ${scores.sessions} session${scores.sessions === 1 ? "" : "s"}.`
      : "No votes yet: open the Study page to cast some.";
    renderTable(scores.rows);
    renderBars(scores.rows);
    setStatus($("status"), "");
  } catch (error) {
    setStatus($("status"), error.message, "error");
  }
}

$("refresh").addEventListener("click", refresh);
refresh();
