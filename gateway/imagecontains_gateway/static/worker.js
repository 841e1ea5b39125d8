// The worker page: answer with y / n / space, undo with u, and wait for the next question without reloading by hand.
"use strict";

const KEYS = { y: "yes", n: "no", " ": "cant-tell" };

// True when the focused control handles the key itself: typing into a field, or Space / Enter pressing
// a focused button or link. A page-wide shortcut must never take that away (Space on "No" means "No").
function ownedByFocus(target, key) {
  if (!(target instanceof Element)) return false;
  if (target.closest("input, textarea, select, [contenteditable]")) return true;
  return (key === " " || key === "Enter") && target.closest("button, a[href], summary, [role=button]") !== null;
}

// Yes and No are for an image the worker has seen: off until it has loaded, gone if it cannot load
// (then only "Can't tell" and "Report a broken image" remain).
function watchImage(form) {
  const image = document.querySelector("img.frame");
  const seeing = form.querySelectorAll("button.yes, button.no");
  // Never back on once the question's time is up (an image that loads late).
  const enable = (on) => seeing.forEach((button) => { button.disabled = !on || form.dataset.timeUp === "true"; });
  const broken = () => {
    document.getElementById("viewer").hidden = true;
    document.getElementById("zoom").hidden = true;
    document.getElementById("image-error").hidden = false;
    seeing.forEach((button) => { button.hidden = true; });
    enable(false);
    form.querySelector("button.broken-image").hidden = false;
  };
  if (image.complete) {
    if (image.naturalWidth === 0) broken();
    return;
  }
  enable(false);
  image.addEventListener("load", () => enable(true));
  image.addEventListener("error", broken);
}

// Images at their own size when they fit, shrunk to fit when they do not, zoomed on request. Enlarged
// pixels stay sharp squares (CSS "pixelated"): smoothing would blur away a small person in a frame.
const ZOOMS = ["fit", "1", "2", "4"];

function zoomControls() {
  const image = document.querySelector("img.frame");
  const bar = document.getElementById("zoom");
  let zoom = "fit";
  const show = () => {
    if (!image.naturalWidth) return;
    image.classList.toggle("zoomed", zoom !== "fit");
    image.style.width = zoom === "fit" ? "" : `${image.naturalWidth * Number(zoom)}px`;
    const scale = image.getBoundingClientRect().width / image.naturalWidth;
    image.classList.toggle("upscaled", scale > 1.001);
    bar.querySelectorAll("button[data-zoom]").forEach((button) => {
      button.setAttribute("aria-pressed", String(button.dataset.zoom === zoom));
    });
    document.getElementById("image-size").textContent =
      `${image.naturalWidth} × ${image.naturalHeight} px, shown at ${Math.round(scale * 100)} %`;
  };
  bar.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-zoom]");
    if (button) { zoom = button.dataset.zoom; show(); }
  });
  image.addEventListener("load", show);
  window.addEventListener("resize", show);
  show();
  return (step) => {
    zoom = ZOOMS[Math.min(Math.max(ZOOMS.indexOf(zoom) + step, 0), ZOOMS.length - 1)];
    show();
  };
}

// The time left to answer the question held; at zero it has gone back to the other workers: say so.
function countDown(form) {
  const question = document.getElementById("question");
  const clock = document.getElementById("clock");
  const end = performance.now() + Number(question.dataset.secondsLeft) * 1000;
  const tick = () => {
    const left = Math.max(0, Math.ceil((end - performance.now()) / 1000));
    clock.textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
    document.getElementById("time-left").classList.toggle("low", left <= 30);
    if (left > 0) { setTimeout(tick, ((end - performance.now()) % 1000) + 20); return; }  // just past the next second
    form.dataset.timeUp = "true";
    form.querySelectorAll("button").forEach((button) => { button.disabled = true; });
    document.getElementById("time-up").hidden = false;
  };
  tick();
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("answer-form");
  const undo = document.getElementById("undo-form");
  const forms = [form, undo].filter(Boolean);
  let sent = false;
  forms.forEach((each) => each.addEventListener("submit", (event) => {
    // One answer (or undo) per page, even on a double click or a held-down key.
    if (sent) { event.preventDefault(); return; }
    sent = true;
    // Disabled after the form data is taken, so the pressed button's value is still sent.
    setTimeout(() => forms.forEach((one) => one.querySelectorAll("button").forEach((button) => { button.disabled = true; })));
  }));
  const zoomBy = form ? zoomControls() : null;
  if (form) {
    watchImage(form);
    countDown(form);
  }
  if (undo) {
    setTimeout(() => { undo.hidden = true; undo.querySelector("button").disabled = true; },
      Number(undo.dataset.secondsLeft) * 1000);
  }
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || ownedByFocus(event.target, event.key)) return;
    const key = event.key.toLowerCase();
    if (zoomBy && (key === "+" || key === "=" || key === "-")) {
      event.preventDefault();
      zoomBy(key === "-" ? -1 : 1);
      return;
    }
    const button = key === "u" ? undo && undo.querySelector("button")
      : form && KEYS[key] && form.querySelector(`button[value="${KEYS[key]}"]`);
    if (!button) return;
    event.preventDefault();  // space would scroll the page
    if (!event.repeat) button.click();
  });

  const waiting = document.getElementById("waiting");
  if (waiting) {
    const poll = async () => {
      try {
        const response = await fetch(waiting.dataset.waitUrl, { credentials: "same-origin", cache: "no-store" });
        if (response.status === 401) { window.location.assign("/signin?for=worker"); return; }
        if ((await response.json()).ready) { window.location.reload(); return; }
      } catch (error) {
        await new Promise((resolve) => setTimeout(resolve, 2000));  // the server is restarting: try again
      }
      poll();
    };
    poll();
  }
});
