// Study page: blind pairs of results, one vote per pair; the arrow keys vote, S skips.
"use strict";

const $ = (id) => document.getElementById(id);
const session = sessionId();
const buttons = ["pick-left", "pick-right", "vote-left", "vote-right", "skip"].map($);
let pair = null;

function setBusy(busy) {
  buttons.forEach((button) => { button.disabled = busy; });
}

function showCount(votes) {
  $("count").textContent = `${votes} vote${votes === 1 ? "" : "s"}`;
}

function loadImage(img, url) {
  return new Promise((resolve, reject) => {
    img.onload = resolve;
    img.onerror = () => reject(new Error("an image of this pair could not be loaded"));
    img.src = url;
  });
}

async function nextPair() {
  setBusy(true);
  pair = null;
  try {
    const next = await fetchJSON(`/api/study/pair?session=${encodeURIComponent(session)}`);
    await Promise.all([loadImage($("left-img"), next.left), loadImage($("right-img"), next.right)]);
    pair = next;
    showCount(next.votes);
    setStatus($("status"), "");
    setBusy(false);
  } catch (error) {
    setStatus($("status"), error.message, "error");
    $("skip").disabled = false;
  }
}

async function vote(choice) {
  if (!pair) return;
  const current = pair;
  setBusy(true);
  pair = null;
  try {
    const result = await fetchJSON("/api/study/vote", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ session, pair_id: current.pair_id, choice }),
    });
    showCount(result.votes);
  } catch (error) {
    setStatus($("status"), `Vote not recorded: ${error.message}`, "error");
  }
  await nextPair();
}

$("pick-left").addEventListener("click", () => vote("left"));
$("vote-left").addEventListener("click", () => vote("left"));
$("pick-right").addEventListener("click", () => vote("right"));
$("vote-right").addEventListener("click", () => vote("right"));
$("skip").addEventListener("click", nextPair);
document.addEventListener("keydown", (event) => {
  if (event.key === "ArrowLeft") vote("left");
  else if (event.key === "ArrowRight") vote("right");
  else if (event.key === "s" || event.key === "S") nextPair();
});
nextPair();
