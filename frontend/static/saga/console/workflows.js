// Workflows page: the filtered list, re-sent by /ws/ui/workflows/?<filters> as workflows change.
(function () {
  "use strict";
  var S = window.Saga, f = S.fmt, el = S.el;
  var limit = S.initial("list-limit"), query = S.initial("list-query");

  function render(rows, count) {
    var body = document.querySelector("#workflow-table tbody");
    body.innerHTML = "";
    rows.forEach(function (w) {
      var link = el("a", {href: "/console/workflows/" + w.id + "/", text: w.external_id || ("workflow " + w.id)});
      body.appendChild(el("tr", {"data-workflow": w.id, "data-state": w.state}, [
        el("td", {}, [link, el("div", {class: "small muted", text: "#" + w.id})]),
        el("td", {text: w.tenant}), el("td", {text: w.template}),
        el("td", {}, [S.badge(w.state)]), el("td", {text: w.home_node || "-"}),
        el("td", {class: "num", "data-field": "calls", text: f.int(w.calls)}),
        el("td", {class: "num", "data-field": "tool_calls", text: f.int(w.tool_calls)}),
        el("td", {text: f.datetime(w.submitted_at)}),
        el("td", {class: "num", text: f.secs(w.tct_s)}),
        el("td", {class: "num", text: w.slowdown === null ? "-" : f.num(w.slowdown) + "x"}),
        el("td", {}, [w.slo_status ? S.badge(w.slo_status) : el("span", {class: "muted", text: "-"})]),
      ]));
    });
    if (!rows.length) {
      body.appendChild(el("tr", {}, [el("td", {colSpan: 11, class: "muted",
        text: "No workflow matches. Agents start workflows through the gateway (/v1) or POST /api/workflows."})]));
    }
    document.getElementById("workflow-count").textContent = count > rows.length ?
      "Newest " + rows.length + " of " + count + " workflows." : count + " workflow" + (count === 1 ? "" : "s") + ".";
  }

  render(S.initial("initial-rows"), S.initial("initial-count"));
  S.connect("/ws/ui/workflows/" + (query ? "?" + query : ""), function (message) {
    if (message.type === "workflows") { render(message.rows.slice(0, limit), message.count); }
  });
})();
