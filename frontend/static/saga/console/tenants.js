// Tenants page: every tenant's attainment over time and figures, live from /ws/ui/tenants/.
(function () {
  "use strict";
  var S = window.Saga, f = S.fmt, el = S.el;
  var overviews = S.initial("initial-tenants");

  function render() {
    window.SagaSlo.attainmentAll("slo-chart", overviews);
    var body = document.querySelector("#tenant-table tbody");
    body.innerHTML = "";
    overviews.forEach(function (o) {
      var t = o.tenant, pts = o.series.points, last = pts.length ? pts[pts.length - 1] : null, q = o.quota;
      var objective = last && last.objective_met !== null ? S.badge(last.objective_met ? "met" : "missed", last.objective_met ? "objective met" : "objective missed") : null;
      body.appendChild(el("tr", {"data-tenant": t.slug}, [
        el("td", {}, [el("a", {href: "/console/tenants/" + t.slug + "/", text: t.name}), el("div", {class: "small muted", text: t.slug})]),
        el("td", {class: "num", text: f.num(t.weight, 3).replace(/\.?0+$/, "")}),
        el("td", {text: t.slo}),
        el("td", {class: "num", "data-field": "cum_attainment"}, [last ? f.pct(last.cum_attainment) : "-", " ", objective]),
        el("td", {class: "num", text: last ? f.pct(last.attainment) : "-"}),
        el("td", {class: "num", text: last && last.slowdown_p95 !== null ? f.num(last.slowdown_p95) + "x" : "-"}),
        el("td", {class: "num", text: f.int(q.active_workflows) + (q.max_concurrent_workflows === null ? "" : " / " + f.int(q.max_concurrent_workflows))}),
        el("td", {class: "num", text: (q.tokens_this_minute === null ? "?" : f.int(q.tokens_this_minute)) + (q.tokens_per_minute === null ? "" : " / " + f.int(q.tokens_per_minute))}),
        el("td", {}, [S.badge(t.is_active ? "applied" : "cancelled", t.is_active ? "active" : "inactive")]),
      ]));
    });
    if (!overviews.length) {
      body.appendChild(el("tr", {}, [el("td", {colSpan: 9, class: "muted", text: "No tenants yet."})]));
    }
  }

  render();
  S.connect("/ws/ui/tenants/", function (message) {
    if (message.type === "tenants") { overviews = message.overviews; render(); }
    else if (message.type === "slo.point") {
      overviews.forEach(function (o) { if (o.tenant.slug === message.point.tenant) { window.SagaSlo.addPoint(o, message.point); } });
      render();
    }
  });
})();
