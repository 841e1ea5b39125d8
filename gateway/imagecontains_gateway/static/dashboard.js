// The requester dashboard: fetches /dashboard/data every two seconds and redraws with text nodes only.
"use strict";

const REFRESH_MS = 2000;

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function resultText(task) {
  if (task.result && typeof task.result.containsTarget === "boolean") {
    const answer = task.result.containsTarget ? "yes" : "no";
    return typeof task.result.confidence === "number" ? `${answer} (${percent(task.result.confidence)} sure)` : answer;
  }
  return task.problem || "";
}

function percent(value) {
  return value === null || value === undefined ? "–" : `${Math.round(value * 100)} %`;
}

// Gold tasks: predicted (mean reported confidence) against observed accuracy, and whether the gap is beyond chance.
function renderCalibration(calibration) {
  const figures = document.getElementById("calibration-figures");
  const verdict = document.getElementById("calibration-verdict");
  document.getElementById("calibration").classList.toggle("warning", calibration.below_target);
  if (!calibration.completed) {
    figures.textContent = "no gold tasks decided yet";
    verdict.textContent = `${calibration.waiting} waiting for answers`;
    return;
  }
  figures.textContent =
    `predicted ${percent(calibration.predicted)} · observed ${percent(calibration.observed)} ` +
    `(${calibration.right} of ${calibration.completed} gold tasks right; ${calibration.inconclusive} inconclusive)`;
  verdict.textContent = calibration.below_target
    ? `Below the ${percent(calibration.target)} target beyond chance (binomial p = ${calibration.p_value.toPrecision(2)}): results are less sure than they say.`
    : `Consistent with the ${percent(calibration.target)} target (binomial p = ${calibration.p_value.toPrecision(2)}).`;
}

// A processing task's "Cancel" button: a form post with the page's CSRF token (built from text nodes only).
function cancelForm(taskName) {
  const form = document.createElement("form");
  form.method = "post";
  form.action = "/dashboard/cancel";
  for (const [name, value] of [["task", taskName], ["csrf", document.getElementById("summary").dataset.csrf]]) {
    const input = document.createElement("input");
    input.type = "hidden";
    input.name = name;
    input.value = value;
    form.appendChild(input);
  }
  const button = document.createElement("button");
  button.type = "submit";
  button.className = "link cancel-task";
  button.textContent = "Cancel";
  form.appendChild(button);
  return form;
}

function render(data) {
  const problems = document.getElementById("problems");
  problems.textContent = data.problems.join(" ");
  problems.hidden = data.problems.length === 0;
  document.getElementById("progress").textContent =
    `${data.finished} of ${data.total} finished (${percent(data.progress)})`;
  const bar = document.getElementById("progress-bar");
  bar.value = data.progress || 0;
  document.getElementById("states").textContent =
    Object.entries(data.states).map(([state, n]) => `${state}: ${n}`).join(" · ") || "no tasks yet";
  document.getElementById("broken-images").textContent = String(data.broken_images);
  document.getElementById("spend").textContent = `$${data.spend.toFixed(2)}`;
  document.getElementById("balance").textContent = `balance $${data.balance.toFixed(2)}`;
  document.getElementById("gold-cost").textContent = `$${data.gold.cost.toFixed(2)}`;
  document.getElementById("gold-answers").textContent =
    `${data.gold.answers} gold answers to check the workers, not billed to you`;

  renderCalibration(data.calibration);

  const workers = document.getElementById("workers");
  workers.replaceChildren(...data.workers.map((worker) => {
    const row = document.createElement("tr");
    row.dataset.worker = worker.worker;
    cell(row, worker.worker, "worker");
    cell(row, String(worker.answers), "number");
    cell(row, percent(worker.accuracy), "number accuracy");
    cell(row, `${percent(worker.accuracy_on_yes)} / ${percent(worker.accuracy_on_no)}`, "number");
    cell(row, worker.gold_answers ? `${worker.gold_right} of ${worker.gold_answers}` : "–", "number gold");
    cell(row, worker.blocked ? `blocked: ${worker.blocked}` : "active", worker.blocked ? "state failed" : "state");
    return row;
  }));

  const slowest = document.getElementById("slowest");
  slowest.replaceChildren(...data.slowest.map((task) => {
    const row = document.createElement("tr");
    cell(row, task.task_name);
    cell(row, task.label || "");
    cell(row, task.state, `state ${task.state}`);
    cell(row, task.seconds.toFixed(1), "number");
    return row;
  }));

  const tasks = document.getElementById("tasks");
  tasks.replaceChildren(...data.tasks.map((task) => {
    const row = document.createElement("tr");
    row.dataset.task = task.task_name;
    cell(row, task.task_name, "task");
    cell(row, task.label || "", "label");
    const image = cell(row, "", "image");
    if (task.image_url) {
      const link = document.createElement("a");
      link.href = task.image_url;  // an http(s) URL: the server validated it
      link.rel = "noreferrer";
      link.textContent = task.image || task.image_url;  // the path in the images folder, else the URL
      image.appendChild(link);
    }
    cell(row, task.broken_image ? `${task.broken_image} ${task.broken_image === 1 ? "report" : "reports"}` : "", "broken");
    cell(row, task.state, `state ${task.state}`);
    cell(row, resultText(task));
    cell(row, `${task.yes} / ${task.no} / ${task.cant_tell}`, "number");
    cell(row, percent(task.agreement), "number");
    cell(row, task.workers.join(", "));
    const actions = cell(row, "", "actions");
    if (task.state === "processing") actions.appendChild(cancelForm(task.task_name));
    return row;
  }));
  page = data.page;  // the server keeps it within the pages there are
  document.getElementById("page").textContent = `page ${data.page} of ${data.pages}`;
  document.getElementById("newer").disabled = data.page <= 1;
  document.getElementById("older").disabled = data.page >= data.pages;
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

// The task table shows one page of tasks, newest first.
let page = 1;

async function load(url) {
  const pageUrl = new URL(url, window.location.origin);
  pageUrl.searchParams.set("page", String(page));
  try {
    const response = await fetch(pageUrl, { credentials: "same-origin", cache: "no-store" });
    if (response.status === 401) { window.location.assign("/signin?for=dashboard"); return false; }
    render(await response.json());
  } catch (error) {
    document.getElementById("updated").textContent = "(server unreachable, retrying)";
  }
  return true;
}

async function refresh(url) {
  if (await load(url)) setTimeout(() => refresh(url), REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  const url = document.getElementById("summary").dataset.url;
  document.getElementById("newer").addEventListener("click", () => { page -= 1; load(url); });
  document.getElementById("older").addEventListener("click", () => { page += 1; load(url); });
  refresh(url);
});
