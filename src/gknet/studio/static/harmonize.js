// Harmonize page: choose a composite, upload or paint its mask, compare and download the result.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("mask-canvas");
const ctx = canvas.getContext("2d");
const MASK_COLOR = [255, 45, 45];
const state = {
  composite: null, // File
  maskFile: null, // uploaded mask, sent as is unless the user paints over it
  maskEdited: false,
  painted: false,
  tool: "brush",
  resultUrl: null, // the model's result (strength 1), as the server sent it
  compositeUrl: null,
  strengthUrl: null, // the result re-rendered at another strength
};

fetchJSON("/api/info").then((info) => {
  $("strength").max = Math.round(100 * (info.max_strength || 1.5));
  $("limits").textContent = `Limits: ${info.max_upload_mb} MB per upload, ` +
    `${Math.round(info.max_pixels / 1e6)} megapixels per image.`;
  const note = info.model ? "" : "No model is loaded: start the studio with --weights PATH.";
  $("model-note").textContent = note;
  $("model-note").hidden = !note;
});

function updateRunButton() {
  $("run").disabled = !(state.composite && (state.maskFile || state.painted));
}

// Show the image as large as the stage allows (small images are scaled up too).
function fitImages() {
  const img = $("editor-image");
  if (!img.naturalWidth) return;
  const area = [$("editor-area"), $("compare-area")].find((element) => !element.hidden);
  if (!area) return;
  const width = area.clientWidth - 26;
  const height = Math.max(300, window.innerHeight - area.getBoundingClientRect().top - 64);
  const scale = Math.min(width / img.naturalWidth, height / img.naturalHeight);
  for (const element of [img, $("before")]) {
    element.style.width = `${Math.floor(img.naturalWidth * scale)}px`;
    element.style.height = `${Math.floor(img.naturalHeight * scale)}px`;
  }
}
window.addEventListener("resize", fitImages);

function showView(view) {
  const hasImage = Boolean(state.composite);
  $("empty").hidden = hasImage;
  $("editor-area").hidden = !hasImage || view !== "mask";
  $("compare-area").hidden = !hasImage || view !== "compare";
  fitImages();
  $("split-label").hidden = view !== "compare";
  $("view-mask").classList.toggle("active", view === "mask");
  $("view-compare").classList.toggle("active", view === "compare");
  $("view-hint").textContent = view === "compare"
    ? "Drag on the image or the slider to compare."
    : hasImage ? "Paint the foreground object; red = foreground." : "";
}

function resetResult() {
  for (const key of ["resultUrl", "strengthUrl"]) {
    if (state[key]) URL.revokeObjectURL(state[key]);
    state[key] = null;
  }
  dial.composite = dial.result = null;
  $("view-compare").disabled = true;
  $("download").hidden = true;
  $("strength-label").hidden = true;
}

$("composite-file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (!file) return;
  state.composite = file;
  if (state.compositeUrl) URL.revokeObjectURL(state.compositeUrl);
  state.compositeUrl = URL.createObjectURL(file);
  $("composite-name").textContent = file.name;
  resetResult();
  const img = $("editor-image");
  img.onload = () => {
    // The mask is painted at the composite's full resolution so it matches pixel for pixel.
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    state.painted = false;
    state.maskEdited = false;
    if (state.maskFile) drawUploadedMask(state.maskFile);
    showView("mask");
    updateRunButton();
  };
  img.onerror = () => setStatus($("status"), `The browser cannot display ${file.name}.`, "error");
  img.src = state.compositeUrl;
  $("before").src = state.compositeUrl;
  setStatus($("status"), "");
});

$("mask-file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (!file) return;
  state.maskFile = file;
  state.maskEdited = false;
  $("mask-name").textContent = file.name;
  resetResult();
  if (state.composite) drawUploadedMask(file);
  updateRunButton();
});

// Preview of an uploaded mask in the paint layer (foreground = brightest channel, or the alpha).
function drawUploadedMask(file) {
  const img = new Image();
  img.onload = () => {
    const scratch = document.createElement("canvas");
    scratch.width = canvas.width;
    scratch.height = canvas.height;
    const sctx = scratch.getContext("2d");
    sctx.drawImage(img, 0, 0, canvas.width, canvas.height);
    const data = sctx.getImageData(0, 0, canvas.width, canvas.height);
    const px = data.data;
    let alphaVaries = false;
    for (let i = 3; i < px.length; i += 4) if (px[i] !== px[3]) { alphaVaries = true; break; }
    for (let i = 0; i < px.length; i += 4) {
      const value = alphaVaries ? px[i + 3] : Math.max(px[i], px[i + 1], px[i + 2]);
      [px[i], px[i + 1], px[i + 2], px[i + 3]] = [...MASK_COLOR, value];
    }
    ctx.putImageData(data, 0, 0);
    state.painted = true;
    URL.revokeObjectURL(img.src);
    updateRunButton();
  };
  img.onerror = () => setStatus($("status"), `The browser cannot display the mask ${file.name}.`, "error");
  img.src = URL.createObjectURL(file);
}

// Painting -----------------------------------------------------------------------------------
function setTool(tool) {
  state.tool = tool;
  $("tool-brush").classList.toggle("active", tool === "brush");
  $("tool-eraser").classList.toggle("active", tool === "eraser");
}
$("tool-brush").addEventListener("click", () => setTool("brush"));
$("tool-eraser").addEventListener("click", () => setTool("eraser"));
$("clear-mask").addEventListener("click", () => {
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  state.painted = false;
  state.maskFile = null;
  state.maskEdited = true;
  $("mask-file").value = "";
  $("mask-name").textContent = "or paint the foreground on the image";
  resetResult();
  updateRunButton();
});

let lastPoint = null;
function canvasPoint(event) {
  const rect = canvas.getBoundingClientRect();
  const scale = canvas.width / rect.width;
  return { x: (event.clientX - rect.left) * scale, y: (event.clientY - rect.top) * scale, scale };
}
function stroke(from, to) {
  ctx.globalCompositeOperation = state.tool === "eraser" ? "destination-out" : "source-over";
  ctx.strokeStyle = ctx.fillStyle = `rgb(${MASK_COLOR.join(",")})`;
  ctx.lineWidth = $("brush-size").value * to.scale;
  ctx.lineCap = ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(from.x, from.y);
  ctx.lineTo(to.x + 0.01, to.y);
  ctx.stroke();
}
function moveCursor(event) {
  const cursor = $("brush-cursor");
  const rect = canvas.getBoundingClientRect();
  const size = Number($("brush-size").value);
  cursor.hidden = false;
  cursor.style.width = cursor.style.height = `${size}px`;
  cursor.style.left = `${event.clientX - rect.left}px`;
  cursor.style.top = `${event.clientY - rect.top}px`;
}
canvas.addEventListener("pointerdown", (event) => {
  canvas.setPointerCapture(event.pointerId);
  lastPoint = canvasPoint(event);
  stroke(lastPoint, lastPoint);
});
canvas.addEventListener("pointermove", (event) => {
  moveCursor(event);
  if (!lastPoint) return;
  const point = canvasPoint(event);
  stroke(lastPoint, point);
  lastPoint = point;
});
canvas.addEventListener("pointerup", () => {
  if (!lastPoint) return;
  lastPoint = null;
  state.painted = true;
  state.maskEdited = true;
  resetResult();
  updateRunButton();
});
canvas.addEventListener("pointerleave", () => { $("brush-cursor").hidden = true; });
document.addEventListener("keydown", (event) => {
  if (event.target.tagName === "INPUT") return;
  if (event.key === "b") setTool("brush");
  if (event.key === "e") setTool("eraser");
});

// Harmonize and compare ------------------------------------------------------------------------
function maskUpload() {
  if (state.maskFile && !state.maskEdited) return Promise.resolve(state.maskFile);
  return new Promise((resolve) => canvas.toBlob((blob) => resolve(new File([blob], "mask.png",
    { type: "image/png" })), "image/png"));
}

$("run").addEventListener("click", async () => {
  const status = $("status");
  $("run").disabled = true;
  setStatus(status, "Harmonizing…");
  const started = performance.now();
  try {
    const form = new FormData();
    form.append("composite", state.composite);
    form.append("mask", await maskUpload());
    const response = await fetch("/api/harmonize", { method: "POST", body: form });
    if (!response.ok) throw await responseError(response);
    resetResult();
    state.resultUrl = URL.createObjectURL(await response.blob());
    $("view-compare").disabled = false;
    await startDial();
    const img = $("editor-image");
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    setStatus(status, `Done: ${img.naturalWidth}×${img.naturalHeight} in ${seconds} s.`, "ok");
    setSplit(50);
    showView("compare");
  } catch (error) {
    setStatus(status, error.message, "error");
  } finally {
    updateRunButton();
  }
});

// Strength dial: composite + s x (result - composite), computed here from the composite and the
// model's result, so moving the slider never re-runs the network (the server's strength field
// computes the same in floating point; this 8-bit version differs by at most one level).
const dial = { composite: null, result: null, busy: false, again: false };

async function imagePixels(url) {
  const img = new Image();
  img.src = url;
  await img.decode();
  const scratch = document.createElement("canvas");
  [scratch.width, scratch.height] = [img.naturalWidth, img.naturalHeight];
  const sctx = scratch.getContext("2d");
  sctx.drawImage(img, 0, 0);
  return sctx.getImageData(0, 0, scratch.width, scratch.height);
}

async function startDial() {
  let pixels = [null, null];
  try { // without the pixels (an image the canvas cannot read) the result is shown at strength 1
    pixels = await Promise.all([imagePixels(state.compositeUrl), imagePixels(state.resultUrl)]);
  } catch (error) {
    console.warn("strength dial unavailable:", error);
  }
  const [composite, result] = pixels;
  const usable = Boolean(result) && composite.width === result.width && composite.height === result.height;
  [dial.composite, dial.result] = usable ? [composite, result] : [null, null];
  $("strength-label").hidden = !usable;
  await renderStrength();
}

function showResult(url, strength) {
  $("after").src = url;
  const suffix = strength === 1 ? "" : `_strength${strength.toFixed(2)}`;
  const name = state.composite.name.replace(/\.[^.]+$/, "") + `_harmonized${suffix}.png`;
  Object.assign($("download"), { href: url, download: name, hidden: false });
}

async function renderStrength() {
  if (dial.busy) { dial.again = true; return; }
  const strength = Number($("strength").value) / 100;
  $("strength-value").textContent = strength.toFixed(2);
  if (strength === 1 || !dial.result) { showResult(state.resultUrl, 1); return; }
  dial.busy = true;
  const { width, height } = dial.result;
  const out = new ImageData(width, height);
  const [c, r, o] = [dial.composite.data, dial.result.data, out.data];
  for (let i = 0; i < o.length; i += 4) { // Uint8ClampedArray rounds and clamps to 0-255
    o[i] = c[i] + strength * (r[i] - c[i]);
    o[i + 1] = c[i + 1] + strength * (r[i + 1] - c[i + 1]);
    o[i + 2] = c[i + 2] + strength * (r[i + 2] - c[i + 2]);
    o[i + 3] = 255;
  }
  const scratch = document.createElement("canvas");
  [scratch.width, scratch.height] = [width, height];
  scratch.getContext("2d").putImageData(out, 0, 0);
  const blob = await new Promise((resolve) => scratch.toBlob(resolve, "image/png"));
  if (state.strengthUrl) URL.revokeObjectURL(state.strengthUrl);
  state.strengthUrl = dial.result ? URL.createObjectURL(blob) : null;
  if (state.strengthUrl) showResult(state.strengthUrl, strength);
  dial.busy = false;
  if (dial.again) { dial.again = false; renderStrength(); }
}
$("strength").addEventListener("input", () => renderStrength());

function setSplit(percent) {
  $("split").value = percent;
  $("after").style.clipPath = `inset(0 0 0 ${percent}%)`;
  $("divider").style.left = `calc(${percent}% - 1px)`;
}
$("split").addEventListener("input", (event) => setSplit(event.target.value));
const compare = $("compare");
function dragSplit(event) {
  const rect = compare.getBoundingClientRect();
  setSplit(Math.min(100, Math.max(0, ((event.clientX - rect.left) / rect.width) * 100)));
}
compare.addEventListener("pointerdown", (event) => {
  compare.setPointerCapture(event.pointerId);
  dragSplit(event);
});
compare.addEventListener("pointermove", (event) => { if (event.buttons) dragSplit(event); });

$("view-mask").addEventListener("click", () => showView("mask"));
$("view-compare").addEventListener("click", () => showView("compare"));
showView("mask");
