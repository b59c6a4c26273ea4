"""The review page's stylesheet and script, served from memory (never from the filesystem).

The script is small and dependency-free: every ``interval`` ms it fetches ``/review/parts`` (the
same filters as the page's own query string) and swaps in the server-rendered HTML of the parts
that changed. A failed fetch (daemon restarting) shows "reconnecting" and retries with a capped
backoff, so a page left open picks the daemon up again after a restart. Acknowledge buttons POST
to the control API with the token typed into the header field (kept in sessionStorage only).
"""

CSS = """
:root { --fake: #c62828; --uncertain: #b26a00; --real: #2e7d32; --muted: #667; --line: #dde; }
* { box-sizing: border-box; }
body { margin: 0; font: 13px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #223; background: #f5f6fa; }
header { display: flex; align-items: center; gap: 14px; padding: 8px 16px; background: #1d2533; color: #eef; }
header .hmeta { min-width: 0; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
header h1, header #status, header form, header #updated { flex: none; }
@media (max-width: 900px) { header { flex-wrap: wrap; } }
header h1 { font-size: 16px; margin: 0; font-weight: 600; }
header .meta { color: #aab; font-size: 12px; }
header .spacer { flex: 1; }
header input { width: 170px; padding: 3px 6px; border-radius: 4px; border: 1px solid #556; background: #2a3344; color: #eef; }
main { padding: 10px 16px 24px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px 10px; margin-bottom: 12px; }
h2 { font-size: 14px; margin: 2px 0 8px; }
h2 small { color: var(--muted); font-weight: normal; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 3px 8px 3px 0; border-bottom: 1px solid #eef; white-space: nowrap; }
th { color: var(--muted); font-weight: 500; font-size: 12px; }
td.num, th.num { text-align: right; }
td.url { max-width: 360px; overflow: hidden; text-overflow: ellipsis; color: #445; font-family: ui-monospace, monospace; font-size: 12px; }
.badge { display: inline-block; padding: 0 7px; border-radius: 9px; font-size: 11px; font-weight: 600; color: #fff; background: #889; }
.badge.fake, .badge.failed, .badge.down { background: var(--fake); }
.badge.uncertain, .badge.reconnecting, .badge.warn { background: var(--uncertain); }
.badge.real, .badge.running, .badge.ok { background: var(--real); }
.badge.starting { background: #1565c0; }
.badge.ended { background: #889; }
.badge.acked { background: #dde; color: #445; }
.cols { display: grid; grid-template-columns: minmax(330px, 430px) 1fr; gap: 12px; align-items: start; }
.cols > section { margin-bottom: 0; }
@media (max-width: 900px) { .cols { grid-template-columns: 1fr; } }
ol.alerts { list-style: none; margin: 0; padding: 0; }
ol.alerts li { display: grid; grid-template-columns: 78px 1fr auto; gap: 2px 8px; padding: 5px 0; border-bottom: 1px solid #eef; align-items: center; }
ol.alerts li .what { font-weight: 600; }
ol.alerts li .sub { grid-column: 2 / 4; color: var(--muted); font-size: 12px; }
ol.alerts li.acked { opacity: .55; }
.kind { font-size: 11px; text-transform: uppercase; letter-spacing: .03em; color: var(--fake); font-weight: 700; }
a { color: #1a4fa0; text-decoration: none; }
a:hover { text-decoration: underline; }
button { font: inherit; font-size: 12px; padding: 1px 8px; border: 1px solid #bbc; background: #f4f5f9; border-radius: 4px; cursor: pointer; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(470px, 1fr)); gap: 10px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 6px 8px; display: grid; grid-template-columns: 96px 1fr; gap: 4px 10px; }
.card .title { grid-column: 1 / 3; display: flex; gap: 8px; align-items: center; }
.card .title .score { margin-left: auto; font-variant-numeric: tabular-nums; color: #445; }
.crop { width: 96px; height: 96px; border-radius: 4px; background: #eef; object-fit: cover; display: flex; align-items: center; justify-content: center; color: var(--muted); font-size: 11px; text-align: center; }
.card .facts { grid-column: 1 / 3; color: var(--muted); font-size: 12px; }
svg.timeline { width: 100%; height: auto; display: block; }
.evidence .chart { flex: 1; min-width: 420px; max-width: 900px; }
header form { display: flex; align-items: center; gap: 6px; margin: 0; }
.legend { color: var(--muted); font-size: 11px; display: flex; gap: 10px; flex-wrap: wrap; margin-top: 2px; }
.legend i { display: inline-block; width: 14px; height: 3px; vertical-align: middle; margin-right: 3px; }
.legend i.frame { background: #1f77b4; } .legend i.temporal { background: #ff7f0e; } .legend i.fused { background: #111; height: 4px; }
.legend i.hi { background: var(--fake); height: 1px; } .legend i.lo { background: var(--real); height: 1px; }
.legend i.now { background: #556; width: 2px; height: 10px; }
.empty { color: var(--muted); padding: 6px 0; }
form.filters { display: flex; gap: 12px; align-items: center; margin: 0 0 10px; flex-wrap: wrap; }
form.filters label { color: var(--muted); }
form.filters select { font: inherit; padding: 1px 4px; }
pre.json { background: #f6f8fa; border: 1px solid var(--line); border-radius: 6px; padding: 10px; overflow: auto; font-size: 12px; max-height: 560px; }
.evidence { display: flex; gap: 16px; align-items: flex-start; flex-wrap: wrap; }
.evidence img { width: 192px; height: 192px; object-fit: cover; border-radius: 6px; border: 1px solid var(--line); }
.msg { color: var(--muted); font-size: 12px; margin-left: 6px; }
"""

JS = r"""
(function () {
  "use strict";
  var live = document.getElementById("live");
  var status = document.getElementById("status");
  var updated = document.getElementById("updated");
  var tokenBox = document.getElementById("token");

  // filters: changing a select reloads the page with the new query string
  document.querySelectorAll("form.filters select").forEach(function (s) {
    s.addEventListener("change", function () { s.form.submit(); });
  });

  if (tokenBox) {
    tokenBox.value = sessionStorage.getItem("fakewatch-token") || "";
    var saveToken = function () { sessionStorage.setItem("fakewatch-token", tokenBox.value.trim()); };
    tokenBox.addEventListener("input", saveToken);
    tokenBox.form.addEventListener("submit", function (ev) { ev.preventDefault(); saveToken(); });
  }

  // acknowledge an alert through the control API (the token never leaves this tab's sessionStorage)
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest("button[data-ack]");
    if (!b) { return; }
    ev.preventDefault();
    var token = sessionStorage.getItem("fakewatch-token") || "";
    var msg = b.parentNode.querySelector(".msg");
    if (!token) { if (msg) { msg.textContent = "type the API token in the header first"; } return; }
    b.disabled = true;
    fetch("/api/v1/alerts/" + encodeURIComponent(b.dataset.ack) + "/ack", {
      method: "POST", cache: "no-store",
      headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json" }, body: "{}"
    }).then(function (r) {
      if (r.ok) { b.textContent = "acknowledged"; if (msg) { msg.textContent = ""; } return; }
      b.disabled = false;
      if (msg) { msg.textContent = r.status === 401 ? "wrong token" : "failed (" + r.status + ")"; }
    }).catch(function () { b.disabled = false; if (msg) { msg.textContent = "daemon unreachable"; } });
  });

  if (!live) { return; }
  var interval = parseInt(live.dataset.interval, 10) || 2000;
  var run = live.dataset.run;
  var failures = 0;

  function setStatus(text, cls, title) {
    status.textContent = text; status.className = "badge " + cls; status.title = title || "";
  }

  function tick() {
    fetch(live.dataset.src + location.search, { cache: "no-store", headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
      .then(function (d) {
        Object.keys(d.parts).forEach(function (id) {
          var el = document.getElementById(id);
          if (el && el.dataset.hash !== d.hashes[id]) { el.innerHTML = d.parts[id]; el.dataset.hash = d.hashes[id]; }
        });
        var restarted = d.run !== run;
        if (restarted) { run = d.run; live.dataset.run = run; }
        setStatus("live", "ok", restarted ? "the daemon restarted; the page follows the new one" : "");
        if (updated) { updated.textContent = "updated " + new Date().toLocaleTimeString(); }
        document.body.dataset.run = run;
        document.body.dataset.polls = String((parseInt(document.body.dataset.polls || "0", 10) || 0) + 1);
        failures = 0;
      })
      .catch(function (e) {
        failures += 1;
        setStatus("reconnecting", "warn", String(e));
      })
      .then(function () { setTimeout(tick, failures ? Math.min(10000, interval * (1 + failures)) : interval); });
  }
  setTimeout(tick, interval);
})();
"""

FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#1d2533"/>'
    '<path d="M2 11 L6 7 L9 9 L14 3" fill="none" stroke="#ff7f0e" stroke-width="2"/></svg>'
)
