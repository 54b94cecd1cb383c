// One tenant: attainment, slowdown over time and its distribution, quota use; live from
// /ws/ui/tenants/<slug>/ (each new SLO point, then the refreshed figures).
(function () {
  "use strict";
  var S = window.Saga, f = S.fmt, el = S.el;
  var data = S.initial("initial-tenant");

  function cards() {
    var pts = data.series.points, last = pts.length ? pts[pts.length - 1] : null, q = data.quota;
    var box = document.getElementById("tenant-cards");
    box.innerHTML = "";
    [["attainment (cumulative)", last ? f.pct(last.cum_attainment) : "-"],
     ["objective", data.tenant.slo_percentile + "% within " + data.tenant.slo_slowdown + "x"],
     ["slowdown p95 (last window)", last && last.slowdown_p95 !== null ? f.num(last.slowdown_p95) + "x" : "-"],
     ["concurrent workflows", f.int(q.active_workflows) + (q.max_concurrent_workflows === null ? " (no limit)" : " / " + f.int(q.max_concurrent_workflows))],
     ["tokens this minute", (q.tokens_this_minute === null ? "?" : f.int(q.tokens_this_minute)) + (q.tokens_per_minute === null ? " (no limit)" : " / " + f.int(q.tokens_per_minute))],
     ["windows charted", String(pts.length) + " of " + data.series.resolution_s + " s"]].forEach(function (c) {
      box.appendChild(el("div", {class: "card"}, [el("div", {class: "v", text: c[1]}), el("div", {class: "k", text: c[0]})]));
    });
    document.getElementById("slo-chart").dataset.points = String(pts.length);
  }

  function render() {
    window.SagaSlo.attainment("slo-chart", data);
    window.SagaSlo.slowdown("slowdown-chart", data);
    window.SagaSlo.distribution("slowdown-distribution", data);
    cards();
  }

  render();
  S.connect("/ws/ui/tenants/" + data.tenant.slug + "/", function (message) {
    if (message.type === "tenant") { data = message; render(); }
    else if (message.type === "slo.point") { window.SagaSlo.addPoint(data, message.point); render(); }
  });
})();
