// Cluster page: the node table and totals, from the initial state and /ws/ui/nodes/.
(function () {
  "use strict";
  var S = window.Saga, f = S.fmt, el = S.el;
  var kinds = S.initial("policy-kinds");
  var nodes = {};
  var HISTORY = 60;
  S.initial("initial-nodes").forEach(function (n) { nodes[n.name] = n; });

  function spark(node, key, opts) {
    return S.sparkline(node.history.map(function (s) { return s[key]; }), opts);
  }

  function policyCell(node, kind) {
    var p = (node.policies || {})[kind] || {};
    var runs = p.runs, answer = p.answer;
    var cell = el("td", {"data-field": "policy-" + kind});
    cell.appendChild(el("span", {text: runs ? runs.name + " v" + runs.version : "-"}));
    if (answer && (!runs || answer.activation_id !== runs.activation_id) && answer.status !== "applied") {
      var label = (answer.status === "rejected" ? "refused " : "pending ") + (answer.name || "") +
        (answer.version ? " v" + answer.version : "");
      var b = S.badge(answer.status, label);
      b.title = answer.error || "";
      cell.appendChild(document.createTextNode(" "));
      cell.appendChild(b);
    }
    return cell;
  }

  function row(n) {
    var tr = el("tr", {"data-node": n.name, "data-heartbeat": n.last_heartbeat_at || ""});
    tr.appendChild(el("td", {}, [el("strong", {text: n.name}), el("div", {class: "small muted",
      text: [n.engine, n.model, (n.gpu_count || 1) + "x " + (n.gpu_model || "?")].filter(Boolean).join(" · ")})]));
    tr.appendChild(el("td", {"data-field": "status"}, [S.badge(n.status), n.drained ? " drained" : ""]));
    var kv = el("td", {class: "num", "data-field": "kv_use", "data-value": n.kv_use === null ? "" : n.kv_use});
    var bar = el("span", {class: "bar"}, [el("span")]);
    bar.firstChild.style.width = Math.min(100, 100 * (n.kv_use || 0)) + "%";
    kv.appendChild(bar);
    kv.appendChild(el("span", {text: f.pct(n.kv_use)}));
    kv.appendChild(el("div", {class: "small muted", "data-field": "kv_tokens",
      text: f.int(n.kv_used_tokens) + " / " + f.int(n.kv_total_tokens)}));
    kv.appendChild(spark(n, "kv_use", {max: 1, title: "KV cache use"}));
    tr.appendChild(kv);
    tr.appendChild(el("td", {class: "num", "data-field": "prefix_cache_hit_rate", "data-value": n.prefix_cache_hit_rate === null ? "" : n.prefix_cache_hit_rate},
      [f.pct(n.prefix_cache_hit_rate), spark(n, "hit", {max: 1, title: "prefix-cache hit rate"})]));
    tr.appendChild(el("td", {class: "num", "data-field": "queue_delay_s", "data-value": n.queue_delay_s === null ? "" : n.queue_delay_s},
      [f.secs(n.queue_delay_s), spark(n, "queue_delay_s", {title: "queue delay (s)", color: "#b7791f"})]));
    tr.appendChild(el("td", {class: "num"},
      [el("span", {"data-field": "running_waiting", text: f.int(n.running) + " / " + f.int(n.waiting)}),
       spark({history: n.history.map(function (s) { return {v: (s.running || 0) + (s.waiting || 0)}; })}, "v", {title: "running + waiting"})]));
    tr.appendChild(el("td", {class: "num", "data-field": "load", "data-value": n.load === null ? "" : n.load},
      [f.num(n.load), spark(n, "load", {title: "load (1 = saturated)", color: "#c0392b"})]));
    tr.appendChild(el("td", {class: "num", "data-field": "cached_workflows", text: f.int(n.cached_workflows)}));
    kinds.forEach(function (kind) { tr.appendChild(policyCell(n, kind)); });
    tr.appendChild(el("td", {"data-field": "last_heartbeat_at", text: f.time(n.last_heartbeat_at)}));
    return tr;
  }

  function totals() {
    var list = Object.keys(nodes).map(function (k) { return nodes[k]; });
    var up = list.filter(function (n) { return n.status === "up" || n.status === "draining"; });
    var sum = function (key) { return up.reduce(function (a, n) { return a + (n[key] || 0); }, 0); };
    var kvUsed = sum("kv_used_tokens"), kvTotal = sum("kv_total_tokens");
    var cards = [
      ["nodes up", up.length + " / " + list.length],
      ["running", f.int(sum("running"))],
      ["waiting", f.int(sum("waiting"))],
      ["KV in use", kvTotal ? f.pct(kvUsed / kvTotal) : "-"],
      ["KV tokens", f.tokens(kvUsed) + " / " + f.tokens(kvTotal)],
      ["max queue delay", up.length ? f.secs(Math.max.apply(null, up.map(function (n) { return n.queue_delay_s || 0; }))) : "-"],
      ["cached workflows", f.int(sum("cached_workflows"))],
    ];
    var box = document.getElementById("totals");
    box.innerHTML = "";
    cards.forEach(function (c) {
      box.appendChild(el("div", {class: "card", "data-total": c[0]}, [el("div", {class: "v", text: c[1]}), el("div", {class: "k", text: c[0]})]));
    });
  }

  function render(flash) {
    var body = document.querySelector("#node-table tbody");
    body.innerHTML = "";
    Object.keys(nodes).sort().forEach(function (name) {
      var tr = row(nodes[name]);
      if (flash === name) { tr.classList.add("flash"); setTimeout(function () { tr.classList.remove("flash"); }, 600); }
      body.appendChild(tr);
    });
    if (!body.children.length) {
      body.appendChild(el("tr", {}, [el("td", {colSpan: 10 + kinds.length, class: "muted",
        text: "No nodes yet. Create one in the admin (Nodes) or with POST /api/admin/nodes, then start saga node with its token."})]));
    }
    totals();
  }

  function applyStatus(event) {
    var n = nodes[event.node] || {name: event.node, history: [], policies: {}};
    var load = event.load || {};
    var total = load.kv_total_tokens || event.kv_capacity_tokens || 0;
    n.status = event.status;
    n.engine = event.engine; n.model = event.model; n.gpu_model = event.gpu_model;
    n.gpu_count = event.gpu_count; n.drained = event.drained;
    n.last_heartbeat_at = event.last_heartbeat_at;
    n.kv_used_tokens = load.kv_used_tokens || 0;
    n.kv_total_tokens = total;
    n.kv_use = total ? (load.kv_used_tokens || 0) / total : null;
    n.prefix_cache_hit_rate = load.prefix_cache_hit_rate;
    n.queue_delay_s = load.queue_delay_s;
    n.running = load.running; n.waiting = load.waiting; n.load = load.load;
    n.cached_workflows = Object.keys(load.cached_workflows || {}).length;
    var last = n.history[n.history.length - 1];
    if (event.sample && (!last || last.t !== event.sample.t)) {
      n.history = n.history.concat([event.sample]).slice(-HISTORY);
    }
    nodes[event.node] = n;
    render(event.node);
  }

  function applyRollout(r) {
    r.nodes.forEach(function (answer) {
      var n = nodes[answer.node];
      if (!n) { return; }
      n.policies = n.policies || {};
      n.policies[r.kind] = {runs: answer.runs, answer: {status: answer.status, error: answer.error,
        activation_id: r.id, name: r.name, version: r.version}};
    });
    render();
  }

  render();
  S.connect("/ws/ui/nodes/", function (message) {
    if (message.type === "cluster") {
      nodes = {};
      message.nodes.forEach(function (n) { nodes[n.name] = n; });
      render();
    } else if (message.type === "node.status") {
      applyStatus(message);
    } else if (message.type === "policy.rollout") {
      applyRollout(message.rollout);
    }
  });
})();
