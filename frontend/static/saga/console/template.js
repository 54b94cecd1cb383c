// A template's learned Agent Execution Graph: cytoscape for states and transitions, Plotly for
// the duration distributions; re-drawn from /ws/ui/templates/<name>/ as the graph learns.
(function () {
  "use strict";
  var S = window.Saga, f = S.fmt, el = S.el;
  var graph = S.initial("initial-graph");
  var cy = null;

  function prob(p) { return f.num(p, p > 0.995 || p < 0.005 ? 3 : 2); }

  function label(node) { return node.id === "call" ? "LLM call" : node.label; }

  function positions(g) {
    var tools = g.nodes.filter(function (n) { return n.kind === "tool" || n.kind === "prior"; });
    // the call in the middle, tools on an arc above it, the end below
    var pos = {call: {x: 0, y: 0}, end: {x: 0, y: 190}};
    var radius = Math.max(230, tools.length * 60);
    tools.forEach(function (n, i) {
      var angle = Math.PI * (1.15 + 0.7 * (tools.length === 1 ? 0.5 : i / (tools.length - 1)));
      pos[n.id] = {x: radius * Math.cos(angle), y: 40 + radius * Math.sin(angle) * 0.7};
    });
    return pos;
  }

  function nodeText(n) {
    if (n.kind === "call") { return "LLM call\noutput median " + f.tokens(n.output_tokens.median) + " tok"; }
    if (n.kind === "end") { return "end"; }
    return n.label + "\nmedian " + f.secs(n.duration_s.median) + " · p90 " + f.secs(n.duration_s.p90);
  }

  function draw(g) {
    var pos = positions(g);
    var elements = g.nodes.map(function (n) {
      return {group: "nodes", data: {id: n.id, label: nodeText(n), kind: n.kind}, position: pos[n.id] || {x: 0, y: 0}};
    });
    g.edges.forEach(function (e, i) {
      elements.push({group: "edges", data: {id: "e" + i, source: e.source, target: e.target,
        label: prob(e.p) + " (" + f.int(e.observed) + ")", width: 1 + 6 * e.p}});
    });
    var container = document.getElementById("aeg-graph");
    container.dataset.workflows = String(g.workflows_seen);
    container.dataset.states = String(g.nodes.length);
    if (typeof cytoscape === "undefined") { return; }
    var style = [
      {selector: "node", style: {"label": "data(label)", "text-wrap": "wrap", "text-valign": "center", "font-size": 11,
        "background-color": "#fff", "border-width": 2, "border-color": "#2f5fd0", "width": 150, "height": 56,
        "shape": "round-rectangle", "text-max-width": 140}},
      {selector: "node[kind = 'tool']", style: {"shape": "ellipse", "border-color": "#7a8397", "background-color": "#f1f3f7"}},
      {selector: "node[kind = 'prior']", style: {"shape": "ellipse", "border-style": "dashed", "border-color": "#9aa3b5", "color": "#5d6778"}},
      {selector: "node[kind = 'end']", style: {"shape": "octagon", "width": 70, "height": 44, "border-color": "#1d2330"}},
      {selector: "edge", style: {"width": "data(width)", "curve-style": "bezier", "label": "data(label)", "font-size": 10,
        "text-background-color": "#fff", "text-background-opacity": 0.85, "text-background-padding": 2,
        "line-color": "#9aa3b5", "target-arrow-shape": "triangle", "target-arrow-color": "#9aa3b5",
        "control-point-step-size": 60, "loop-direction": "0deg", "loop-sweep": "-60deg"}},
    ];
    if (cy === null) {
      cy = cytoscape({container: container, elements: elements, style: style, autoungrabify: false,
        layout: {name: "preset", fit: true, padding: 40}, boxSelectionEnabled: false});
      window.SagaAegGraph = cy;
    } else {
      cy.json({elements: elements});
      cy.fit(undefined, 40);
    }
  }

  // CDF of a log-normal with parameters mu, sigma (erf by Abramowitz-Stegun 7.1.26)
  function erf(x) {
    var s = x < 0 ? -1 : 1; x = Math.abs(x);
    var t = 1 / (1 + 0.3275911 * x);
    var y = 1 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-x * x);
    return s * y;
  }
  function cdf(fit, x) {
    if (fit.sigma < 1e-9) { return x >= Math.exp(fit.mu) ? 1 : 0; }
    return 0.5 * (1 + erf((Math.log(x) - fit.mu) / (fit.sigma * Math.SQRT2)));
  }

  function durations(g) {
    var fits = g.nodes.filter(function (n) { return n.duration_s; })
      .map(function (n) { return {name: n.label, fit: n.duration_s, dash: n.kind === "prior" ? "dot" : "solid"}; });
    fits.push({name: "think time (call → call)", fit: g.think_s, dash: "dash"});
    var xs = [];
    for (var i = 0; i <= 120; i++) { xs.push(Math.pow(10, -1 + i * 4 / 120)); }
    var traces = fits.map(function (d) {
      return {x: xs, y: xs.map(function (x) { return cdf(d.fit, x); }), name: d.name, mode: "lines", line: {dash: d.dash}};
    });
    var layout = {margin: {l: 50, r: 10, t: 10, b: 45}, xaxis: {type: "log", title: {text: "seconds"}},
      yaxis: {title: {text: "share finished within"}, range: [0, 1], tickformat: ".0%"}, legend: {orientation: "h", y: -0.25}};
    if (typeof Plotly !== "undefined") {
      Plotly.react("aeg-durations", traces, layout, {displaylogo: false, responsive: true});
    }
  }

  function tables(g) {
    var facts = document.getElementById("aeg-facts");
    facts.innerHTML = "";
    [["learned from", f.int(g.workflows_seen) + " workflows"], ["updated", g.updated_at ? f.datetime(g.updated_at) : "never (prior only)"],
     ["context re-read per call", f.pct(g.reuse_fraction)], ["context growth per call", f.tokens(g.growth_tokens_per_call) + " tokens"],
     ["tool result to next call", f.secs(g.post_tool_delay_s)]].forEach(function (c) {
      facts.appendChild(el("div", {class: "card"}, [el("div", {class: "v", text: c[1]}), el("div", {class: "k", text: c[0]})]));
    });
    var body = document.querySelector("#aeg-states tbody");
    body.innerHTML = "";
    g.nodes.filter(function (n) { return n.kind !== "end"; }).forEach(function (n) {
      var d = n.duration_s, o = n.output_tokens;
      var cells = d ? [f.secs(d.median), f.secs(d.p90), f.secs(d.mean), f.num(d.weight, 1)] :
        o ? [f.tokens(o.median) + " tok", f.tokens(o.p90) + " tok", f.tokens(o.mean) + " tok", f.num(o.weight, 1)] : ["-", "-", "-", "-"];
      body.appendChild(el("tr", {"data-state": n.id}, [el("td", {text: n.kind === "call" ? "LLM call (output length)" : label(n)})]
        .concat(cells.map(function (c) { return el("td", {class: "num", text: c}); }))));
    });
    body.appendChild(el("tr", {}, [el("td", {text: "think time (call → call)"}), el("td", {class: "num", text: f.secs(g.think_s.median)}),
      el("td", {class: "num", text: f.secs(g.think_s.p90)}), el("td", {class: "num", text: f.secs(g.think_s.mean)}), el("td", {class: "num", text: f.num(g.think_s.weight, 1)})]));
    var names = {};
    g.nodes.forEach(function (n) { names[n.id] = label(n); });
    var edges = document.querySelector("#aeg-edges tbody");
    edges.innerHTML = "";
    g.edges.forEach(function (e) {
      edges.appendChild(el("tr", {}, [el("td", {text: names[e.source] || e.source}), el("td", {text: names[e.target] || e.target}),
        el("td", {class: "num", text: f.num(e.p, 3)}), el("td", {class: "num", text: f.int(e.observed)})]));
    });
  }

  function render(g) { graph = g; draw(g); durations(g); tables(g); }
  render(graph);
  S.connect("/ws/ui/templates/" + encodeURIComponent(graph.template) + "/", function (message) {
    if (message.type === "aeg") { render(message.graph); }
  });
})();
