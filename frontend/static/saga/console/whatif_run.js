// A what-if run: each task's progress, live from /ws/ui/whatif/<id>/ (the jobs announce every
// progress report), then the side-by-side results and the report once every task has ended.
(function () {
  "use strict";
  var S = window.Saga, f = S.fmt, el = S.el;
  var run = S.initial("initial-run");
  var FINISHED = {succeeded: true, failed: true, cancelled: true};

  function progress(task) {
    var share = task.total ? task.done / task.total : (task.status === "succeeded" ? 1 : 0);
    var bar = el("span", {class: "bar"}, [el("span", {style: "width:" + (100 * share).toFixed(1) + "%"})]);
    return el("td", {"data-field": "progress"}, [bar, f.int(task.done) + " / " + (task.total ? f.int(task.total) : "?")]);
  }

  function renderTasks() {
    var body = document.getElementById("task-rows");
    body.innerHTML = "";
    run.tasks.forEach(function (t) {
      body.appendChild(el("tr", {"data-task": t.index, "data-status": t.status}, [
        el("td", {text: t.policy}), el("td", {class: "num", text: f.num(t.load, 2)}),
        el("td", {}, [S.badge(t.status)]), progress(t),
        el("td", {class: "small mono", text: t.worker || "-"}),
        el("td", {class: "small", text: t.error || ""}),
      ]));
    });
  }

  function speedup(p, reference) {
    if (p.tct_geomean_speedup === null || p.tct_geomean_speedup === undefined) { return "-"; }
    var text = f.num(p.tct_geomean_speedup) + "x";
    if (reference) { return text + " (reference)"; }
    var ci = p.tct_speedup_ci95;
    return ci ? text + " (" + f.num(ci[0]) + "-" + f.num(ci[1]) + ")" : text;
  }

  function renderResults() {
    var results = run.results;
    document.getElementById("results").hidden = !results;
    if (!results) { return; }
    var names = Object.keys(results.policies);
    document.getElementById("results-load").textContent = "at load " + f.num(results.command.load, 2) +
      (run.loads.length > 1 ? " (the report has every load point)" : "") + "; reference: " + results.reference_policy;
    var rows = document.getElementById("result-rows");
    rows.innerHTML = "";
    names.forEach(function (name, i) {
      var p = results.policies[name];
      rows.appendChild(el("tr", {"data-policy": name}, [
        el("td", {text: name}), el("td", {class: "num", "data-field": "speedup", text: speedup(p, i === 0)}),
        el("td", {class: "num", text: p.p_value === null || p.p_value === undefined ? "-" : Number(p.p_value).toExponential(1)}),
        el("td", {class: "num", text: f.secs(p.tct_p50_s) + " / " + f.secs(p.tct_p95_s)}),
        el("td", {class: "num", "data-field": "slo", text: f.pct(p.slo_attainment)}),
        el("td", {class: "num", text: f.int(p.recompute_tokens)}),
        el("td", {class: "num", text: f.pct(p.cache_hit_rate)}),
        el("td", {class: "num", text: f.num(p.throughput_tasks_per_hour, 1)}),
        el("td", {class: "small muted", text: p.calls_lost ? f.int(p.calls_lost) + " calls lost" : ""}),
      ]));
    });
    var tenants = names.length ? Object.keys(results.policies[names[0]].tenants) : [];
    var head = document.getElementById("tenant-head");
    head.innerHTML = "";
    head.appendChild(el("tr", {}, [el("th", {text: "Tenant"}), el("th", {text: "SLO"})].concat(names.map(function (n) {
      return el("th", {class: "num", text: n + ": slowdown p50 / p95, attainment"});
    }))));
    var body = document.getElementById("tenant-rows");
    body.innerHTML = "";
    tenants.forEach(function (t) {
      var first = results.policies[names[0]].tenants[t];
      body.appendChild(el("tr", {"data-tenant": t}, [el("td", {text: t}),
        el("td", {text: f.num(first.slo_slowdown, 1) + "x for " + f.num(first.slo_percentile, 1) + "%"})].concat(names.map(function (n) {
        var row = results.policies[n].tenants[t];
        return el("td", {class: "num"}, [f.num(row.slowdown_p50) + "x / " + f.num(row.slowdown_p95) + "x, " + f.pct(row.slo_attainment) + " ",
          S.badge(row.slo_met ? "met" : "missed", row.slo_met ? "SLO met" : "SLO missed")]);
      }))));
    });
    var agree = document.getElementById("agreement");
    var a = results.agreement;
    if (a && a.tenants && Object.keys(a.tenants).length) {
      agree.hidden = false;
      agree.textContent = "Live vs replay of the active set (mean per tenant): " + Object.keys(a.tenants).map(function (t) {
        var r = a.tenants[t];
        return t + " TCT " + f.secs(r.live_tct_mean) + " live / " + f.secs(r.replay_tct_mean) + " replayed (" +
          f.pct(r.tct_relative_error) + " apart), slowdown " + f.num(r.live_slowdown_mean) + "x / " + f.num(r.replay_slowdown_mean) + "x";
      }).join("; ") + ".";
    }
    var estimated = (results.recording && results.recording.estimated) || [];
    document.getElementById("estimated").textContent = estimated.length ? "Estimated rather than recorded: " + estimated.join("; ") : "";
    var frame = document.getElementById("report");
    if (run.has_report && !frame.getAttribute("src")) { frame.setAttribute("src", frame.dataset.src); }
  }

  function render() {
    var status = document.getElementById("run-status");
    status.className = "badge " + run.status;
    status.textContent = run.status;
    var error = document.getElementById("run-error");
    error.hidden = !run.error;
    error.textContent = run.error || "";
    var cancel = document.getElementById("cancel-form");
    if (cancel && FINISHED[run.status]) { cancel.remove(); }
    renderTasks();
    renderResults();
  }

  render();
  S.connect("/ws/ui/whatif/" + run.id + "/", function (message) {
    if (message.type === "whatif") { run = message.run; render(); }
  });
})();
