// The fedda coordinator's status page. It draws itself from the JSON the page was served with,
// then from /api/... every few seconds. Every string is set as text (textContent or SVG text
// nodes), never as markup: site ids, versions, device names and reasons come from the sites.
// With a consortium kit the browser holds the token in an HttpOnly cookie (traded for the first
// visit's ?token= by the server): this script never sees it, and links and requests carry none.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#1f5fbf", "#d0671f", "#1b9e4b", "#8e3fb5", "#b5322f", "#2a9d9d", "#7a6a12", "#c2417f"];
const jobMatch = location.pathname.match(/^\/jobs\/([A-Za-z0-9_.-]+)$/);
const jobId = jobMatch ? jobMatch[1] : null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) node.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function link(path, text) {
  return el("a", { href: path }, text);
}

function ago(ms) {
  if (!ms) return "never";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

function duration(s) {
  if (s === null || s === undefined) return "";
  s = Math.round(s);
  if (s < 90) return s + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function fixed(v, digits) {
  return typeof v === "number" && isFinite(v) ? v.toFixed(digits) : "";
}

function table(headers, rows, numeric) {
  const head = el("tr", {}, ...headers.map((h) => el("th", {}, h)));
  const body = rows.map((cells) =>
    el("tr", {}, ...cells.map((c, i) => el("td", numeric && numeric.includes(i) ? { class: "num" } : {}, c))));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
}

function stateCell(state) {
  return el("span", { class: "state " + state }, state);
}

function progressCell(job) {
  const done = job.round || 0, total = job.rounds || 0;
  return el("span", { class: "progress" }, el("progress", { max: Math.max(total, 1), value: done }), " " + done + " / " + total);
}

function drawHeader(coordinator) {
  document.getElementById("consortium").textContent = coordinator.consortium || "";
  const info = document.getElementById("coordinator");
  info.replaceChildren("coordinator " + coordinator.version + " · up " + duration(coordinator.uptime_s) + " · ");
  if (coordinator.insecure) info.append(el("span", { class: "insecure" }, "insecure: no consortium kit"));
  else info.append("CurveZMQ, signed models");
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

// A site's machine as its agent reported it ("4 cores, 8.0 GiB, 50 GiB free, float32, GPU ...").
function resourcesText(r) {
  if (!r) return "";
  const gib = (bytes, digits) => (bytes / 1073741824).toFixed(digits) + " GiB";
  const parts = [];
  if (typeof r.cores === "number") parts.push(r.cores + " cores");
  if (typeof r.memory_bytes === "number") parts.push(gib(r.memory_bytes, 1));
  if (typeof r.cache_free_bytes === "number") parts.push(gib(r.cache_free_bytes, 0) + " free");
  if (typeof r.precision === "string") parts.push(r.precision);
  for (const gpu of r.gpus || []) if (typeof gpu === "string") parts.push("GPU " + gpu);
  return parts.join(", ");
}

function drawSites(sites) {
  const rows = sites.map((s) => [
    el("span", {}, el("span", { class: s.online ? "dot on" : "dot" }), s.site),
    s.revoked ? el("span", { class: "refused" }, "revoked") : s.online ? "online" : "offline",
    ago(s.last_seen_ms),
    s.agent_version || "",
    s.device || "",
    s.threads ? String(s.threads) : "",
    resourcesText(s.resources),
    Object.entries(s.jobs || {}).map(([job, p]) => job + ": " + p.state).join(", "),
  ]);
  return [el("h2", {}, "Sites (" + sites.filter((s) => s.online).length + " of " + sites.length + " online)"),
          table(["site", "state", "last seen", "agent", "device", "threads", "resources", "jobs"], rows, [5])];
}

// The open round's sites: "answered: a, b · waiting for: c" (or "" when no round is open).
function roundSitesText(r) {
  if (!r) return "";
  const what = r.evaluation ? "evaluation" : "round " + r.round;
  return what + ": answered " + (r.answered.length ? r.answered.join(", ") : "none yet") +
         (r.waiting.length ? " · waiting for " + r.waiting.join(", ") : "");
}

const ENDED = ["finished", "failed", "aborted"];

function jobRows(jobs) {
  return jobs.map((j) => [
    link("/jobs/" + j.id, j.id),
    j.type + (j.method && j.method !== j.type ? " (" + j.method + ")" : ""),
    stateCell(j.state),
    progressCell(j),
    j.activity ? el("span", {}, j.activity, j.round_sites ? el("br") : null,
                    j.round_sites ? el("span", { class: "muted" }, roundSitesText(j.round_sites)) : null)
               : (j.error ? el("span", { class: "refused" }, j.error) : ""),
    j.eta_s === null || j.eta_s === undefined ? "" : duration(j.eta_s),
    (j.sites || []).join(", "),
    j.submitted_by || "",
  ]);
}

// Running and queued jobs first; those that ended folded below them.
function drawJobs(jobs) {
  const head = ["job", "type", "state", "rounds", "activity", "ETA", "sites", "submitted by"];
  const active = jobs.filter((j) => !ENDED.includes(j.state));
  const ended = jobs.filter((j) => ENDED.includes(j.state));
  const out = [el("h2", {}, "Jobs")];
  if (!jobs.length) return out.concat([el("p", { class: "muted" }, "No jobs yet.")]);
  out.push(active.length ? table(head, jobRows(active), [5]) : el("p", { class: "muted" }, "No job is running or queued."));
  if (ended.length) {
    const shown = document.getElementById("ended-jobs");  // kept open across refreshes once opened
    out.push(el("details", { id: "ended-jobs", open: shown && shown.open ? "" : null },
                el("summary", {}, "Ended jobs (" + ended.length + ")"),
                table(head, jobRows(ended), [5])));
  }
  return out;
}

// A line chart: series = [{name, points: [[x, y], ...]}], drawn into a w x h SVG with axes.
function lineChart(title, series, yLabel, w = 640, h = 220) {
  const all = series.flatMap((s) => s.points).filter((p) => isFinite(p[1]));
  const root = svg("svg", { width: w, height: h, viewBox: "0 0 " + w + " " + h, role: "img", "aria-label": title });
  if (!all.length) {
    root.append(svg("text", { x: 12, y: 24 }, title + ": no rounds yet"));
    return root;
  }
  const m = { l: 52, r: 12, t: 24, b: 28 };
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  let y0 = Math.min(0, ...ys), y1 = Math.max(...ys);
  if (y1 <= y0) y1 = y0 + 1;
  const X = (x) => m.l + ((x - x0) / (x1 - x0)) * (w - m.l - m.r);
  const Y = (y) => h - m.b - ((y - y0) / (y1 - y0)) * (h - m.t - m.b);
  root.append(svg("text", { x: m.l, y: 15 }, title));
  root.append(svg("line", { x1: m.l, y1: h - m.b, x2: w - m.r, y2: h - m.b, stroke: "#9aa3b0" }));
  root.append(svg("line", { x1: m.l, y1: m.t, x2: m.l, y2: h - m.b, stroke: "#9aa3b0" }));
  for (const f of [0, 0.5, 1]) {
    const v = y0 + f * (y1 - y0);
    root.append(svg("text", { x: 4, y: Y(v) + 4 }, Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3)));
  }
  root.append(svg("text", { x: m.l, y: h - 8 }, "round " + x0));
  root.append(svg("text", { x: w - m.r - 60, y: h - 8 }, "round " + x1));
  root.append(svg("text", { x: w - m.r - 140, y: 15 }, yLabel));
  series.forEach((s, i) => {
    const pts = s.points.filter((p) => isFinite(p[1]));
    const color = COLORS[i % COLORS.length];
    if (pts.length > 1) {
      root.append(svg("polyline", { fill: "none", stroke: color, "stroke-width": 2,
                                    points: pts.map((p) => X(p[0]).toFixed(1) + "," + Y(p[1]).toFixed(1)).join(" ") }));
    }
    for (const p of pts) root.append(svg("circle", { cx: X(p[0]), cy: Y(p[1]), r: 2.5, fill: color }));
  });
  return root;
}

function legend(names) {
  return el("p", { class: "legend" }, ...names.map((name, i) => {
    const swatch = svg("svg", { width: 14, height: 8 });
    swatch.append(svg("rect", { width: 14, height: 8, fill: COLORS[i % COLORS.length] }));
    return el("span", {}, swatch, " " + name);
  }));
}

function drawJob(job) {
  const rounds = job.rounds_done || [];
  const out = [el("h2", {}, "Job " + job.id),
    el("p", {}, stateCell(job.state), " · ", progressCell(job), " · ",
       job.type + (job.method ? " (" + job.method + ")" : ""), " · sites: " + (job.sites || []).join(", "),
       job.eta_s !== null && job.eta_s !== undefined ? " · ETA " + duration(job.eta_s) : "")];
  if (job.activity) out.push(el("p", { class: "muted" }, job.activity));
  if (job.round_sites) out.push(el("p", { class: "muted" }, roundSitesText(job.round_sites)));
  if (job.error) out.push(el("p", { class: "refused" }, job.error));

  const sites = [...new Set(rounds.flatMap((r) => (r.sites || []).map((s) => s.site)))];
  const loss = sites.map((site) => ({ name: site, points: rounds.map((r) => {
    const s = (r.sites || []).find((x) => x.site === site);
    return [r.round, s ? s.loss : NaN];
  }) }));
  out.push(el("h2", {}, "Training loss per site"), lineChart("loss", loss, "mean loss of the round"), legend(sites));
  out.push(el("h2", {}, "Round time"),
           lineChart("seconds", [{ name: "round", points: rounds.map((r) => [r.round, r.seconds]) }], "seconds per round"));

  const evalSites = [...new Set(rounds.flatMap((r) => Object.keys(r.test_dsc || {})))];
  if (evalSites.length) {
    const curves = evalSites.map((site) => ({ name: site, points: rounds.filter((r) => r.test_dsc && site in r.test_dsc)
                                                           .map((r) => [r.round, r.test_dsc[site]]) }));
    out.push(el("h2", {}, "Dice on the evaluation sites during training"), lineChart("Dice", curves, "mean Dice"),
             legend(evalSites));
  }
  // Differential privacy: each site's epsilon so far, as its updates said (the patient is the unit).
  const privateSites = sites.filter((site) => rounds.some((r) => (r.sites || []).some((x) => x.site === site &&
                                                                                        typeof x.epsilon === "number")));
  if (privateSites.length) {
    const spent = privateSites.map((site) => ({ name: site, points: rounds.map((r) => {
      const s = (r.sites || []).find((x) => x.site === site);
      return [r.round, s && typeof s.epsilon === "number" ? s.epsilon : NaN];
    }) }));
    const latest = privateSites.map((site) => {
      const last = rounds.map((r) => (r.sites || []).find((x) => x.site === site && typeof x.epsilon === "number"))
                         .filter((x) => x).pop();
      const round = rounds.filter((r) => (r.sites || []).some((x) => x === last)).map((r) => r.round).pop();
      return [site, fixed(last.epsilon, 3), fixed(last.noise_multiplier, 3), String(round)];
    });
    out.push(el("h2", {}, "Differential privacy: epsilon spent per site"),
             el("p", { class: "muted" }, "Each site's epsilon so far for its patients (DP-SGD, the patient as the unit; " +
                                         "at the job's delta), as its latest update said."),
             table(["site", "epsilon so far", "noise multiplier", "as of round"], latest, [1, 2, 3]),
             lineChart("epsilon", spent, "epsilon so far"), legend(privateSites));
  }
  const dice = job.summary && job.summary.mean_dsc;
  out.push(el("h2", {}, "Dice"));
  out.push(dice ? table(["evaluation site", "mean Dice"], Object.entries(dice).map(([s, d]) => [s, fixed(d, 3)]), [1])
                : el("p", { class: "muted" }, "Not evaluated yet (the job evaluates after its last round)."));
  const quality = job.summary && job.summary.quality;
  if (quality) {
    out.push(el("h2", {}, "Quality at the sites, without labels"),
             el("p", { class: "muted" }, "Each site's own estimate of the model's Dice on its scans (label-free; the " +
                                         "per-scan report stays at the site), scans it flagged, and scans whose " +
                                         "statistics drifted from its baseline."));
    out.push(table(["site", "scans", "estimated Dice (median)", "IQR", "flagged", "drifted"],
      Object.entries(quality).map(([s, q]) => [s, String(q.scans), fixed(q.estimated_dsc_median, 3),
        q.estimated_dsc_q1 !== undefined ? fixed(q.estimated_dsc_q1, 3) + " – " + fixed(q.estimated_dsc_q3, 3) : "",
        String(q.flagged), el("span", q.site_drifted ? { class: "refused" } : {},
                              String(q.drifted) + (q.site_drifted ? " (site drifted)" : ""))]), [1, 2, 3, 4, 5]));
  }

  const recent = rounds.slice(-10).reverse();
  out.push(el("h2", {}, "Round cost (last " + recent.length + ")"));
  out.push(table(["round", "seconds", "training s", "sites s", "transport s", "encode s", "aggregate s", "persist s",
                  "overhead", "task MB", "refused or missing"],
    recent.map((r) => {
      const f = r.federation || {};
      const problems = (r.refused || []).map((x) => x.site + ": " + x.reason).concat(r.missing || []);
      return [String(r.round), fixed(r.seconds, 1), fixed(f.training_s, 1), fixed(f.site_s, 1), fixed(f.transport_s, 2),
              fixed(f.encode_s, 2), fixed(f.aggregate_s, 2), fixed(f.persist_s, 2),
              typeof f.overhead_share === "number" ? (100 * f.overhead_share).toFixed(0) + " %" : "",
              fixed((f.task_bytes || 0) / 1e6, 1), el("span", { class: "refused" }, problems.join("; "))];
    }), [1, 2, 3, 4, 5, 6, 7, 8, 9]));
  return out;
}

function render(data) {
  if (data.coordinator) drawHeader(data.coordinator);
  const main = document.getElementById("main");
  if (jobId) {
    main.replaceChildren(...(data.job ? drawJob(data.job) : [el("p", { class: "refused" }, data.error || "no such job")]));
  } else {
    main.replaceChildren(...drawJobs(data.jobs || []), ...drawSites(data.sites || []));
  }
}

async function refresh() {
  try {
    const url = jobId ? "/api/jobs/" + encodeURIComponent(jobId) : "/api/overview";
    const answer = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    const data = await answer.json();
    if (!jobId) render(data);
    else render(answer.ok ? { job: data } : { error: data.error });
  } catch (e) {
    document.getElementById("updated").textContent = "cannot reach the coordinator (" + e.message + "); retrying";
  }
}

render(JSON.parse(document.getElementById("fedda-data").textContent));
setInterval(refresh, 3000);
