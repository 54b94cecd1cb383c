// Rollout panels (policies page, activation page): each node's answer as it arrives over
// /ws/ui/policies/, the rollout's status, and whether the activation is in force.
(function () {
  "use strict";
  var S = window.Saga, f = S.fmt, el = S.el;
  var SUMMARY = {
    pending: "rolling out: nodes are still answering",
    applied: "applied: every node that answered runs it",
    partial: "partial: some nodes refused it and kept what they ran",
    failed: "failed: every node refused it; it is not in force and the nodes kept what they ran",
  };

  function render(panel, r) {
    panel.dataset.rollout = r.rollout;
    var body = panel.querySelector(".rollout-body");
    body.innerHTML = "";
    var inForce = r.in_force_id === r.id;
    body.appendChild(el("div", {}, [
      el("strong", {}, [el("a", {href: "/console/policies/activations/" + r.id + "/", text: "#" + r.id}),
        " " + r.name + " v" + r.version]), " ", S.badge(r.rollout, r.rollout), " ",
      el("span", {class: "muted small", "data-field": "in-force", text: inForce ? "in force" : (r.failed ? "not in force" : "not the one in force")}),
    ]));
    if (r.tier === "gateway") {
      // Routing is the gateway's: no node is asked; every gateway process applies it at its
      // next directory refresh.
      body.appendChild(el("p", {class: "small", "data-field": "summary", text: "applied by the gateway (routing runs there, not on nodes)"}));
      return;
    }
    body.appendChild(el("p", {class: "small", "data-field": "summary", text: SUMMARY[r.rollout] || r.rollout}));
    var table = el("table", {class: "data"});
    table.appendChild(el("thead", {}, [el("tr", {}, [el("th", {text: "Node"}), el("th", {text: "Answer"}), el("th", {text: "Runs now"}), el("th", {text: "Reason"}), el("th", {text: "When"})])]));
    var tbody = el("tbody");
    r.nodes.forEach(function (n) {
      var status = n.status === "pending" && n.node_status === "down" ? "pending (node down)" : (n.status === "rejected" ? "refused" : n.status);
      tbody.appendChild(el("tr", {"data-node": n.node, "data-status": n.status}, [
        el("td", {text: n.node}), el("td", {}, [S.badge(n.status, status)]),
        el("td", {text: n.runs ? n.runs.name + " v" + n.runs.version + " (#" + n.runs.activation_id + ")" : "-"}),
        el("td", {class: "small", "data-field": "error", text: n.error || ""}), el("td", {text: f.time(n.updated_at)}),
      ]));
    });
    if (!r.nodes.length) {
      tbody.appendChild(el("tr", {}, [el("td", {colSpan: 5, class: "muted", text: "No node was connected: nodes get it when they register."})]));
    }
    table.appendChild(tbody);
    body.appendChild(table);
  }

  var initial = {};
  document.querySelectorAll("[data-testid=rollout-status]").forEach(function (panel) {
    initial[panel.dataset.activation] = panel;
  });
  var payloads = JSON.parse(document.getElementById("rollout-data") ? document.getElementById("rollout-data").textContent : "[]");
  payloads.forEach(function (r) { if (initial[r.id]) { render(initial[r.id], r); } });

  function apply(r) {
    var panel = initial[r.id];
    if (!panel) {
      // a newer activation of a kind shown on the policies page replaces that kind's panel
      var shown = document.querySelector("[data-testid=rollout-status][data-kind='" + r.kind + "']");
      if (!shown || document.body.dataset.page === "activation" || Number(shown.dataset.activation) > r.id) { return; }
      delete initial[shown.dataset.activation];
      shown.dataset.activation = String(r.id);
      initial[r.id] = panel = shown;
    }
    render(panel, r);
    var line = document.querySelector("[data-testid=in-force][data-kind='" + r.kind + "'] [data-field=in-force-line]");
    if (line && r.in_force_id === r.id && line.dataset.activation !== String(r.id)) {
      line.dataset.activation = String(r.id);
      line.innerHTML = "";
      line.appendChild(document.createTextNode("In force: "));
      line.appendChild(el("strong", {text: r.name + " v" + r.version}));
      line.appendChild(el("span", {class: "muted", text: " (activation #" + r.id + ", " + r.rollout + ", by " + r.actor + "; reload for its parameters)"}));
    }
  }

  S.connect("/ws/ui/policies/", function (message) {
    if (message.type === "policy.rollout") { apply(message.rollout); }
    else if (message.type === "policy.rollouts") { message.rollouts.forEach(apply); }
  });
})();

// "+ add" under a mapping parameter: another name → value row.
document.addEventListener("click", function (event) {
  var button = event.target.closest(".add-row");
  if (!button) { return; }
  var rows = button.parentNode.querySelectorAll(".mapping-row");
  var copy = rows[rows.length - 1].cloneNode(true);
  copy.querySelectorAll("input").forEach(function (input) { input.value = ""; });
  button.parentNode.insertBefore(copy, button);
});
