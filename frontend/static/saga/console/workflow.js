// A workflow's page: facts, the execution graph (cytoscape), forecast, calls and tool calls,
// all re-drawn from /ws/ui/workflows/<id>/ as the workflow runs.
(function () {
  "use strict";
  var S = window.Saga, f = S.fmt, el = S.el;
  var state = S.initial("initial-workflow");
  var PER_ROW = 6;
  var cy = null;

  function steps(d) {
    // calls and tool calls in time order: a tool call follows the call it came after
    var items = [];
    d.calls.forEach(function (c) { items.push({kind: "call", at: c.queued_at, seq: c.seq, call: c}); });
    d.tool_calls.forEach(function (t, i) {
      items.push({kind: "tool", at: t.started_at, seq: t.after_call_seq === null ? -1 : t.after_call_seq, index: i, tool: t});
    });
    items.sort(function (a, b) {
      if (a.seq !== b.seq) { return a.seq - b.seq; }
      return a.kind === b.kind ? (a.at < b.at ? -1 : 1) : (a.kind === "call" ? -1 : 1);
    });
    return items;
  }

  function callLabel(c) {
    var timing = ["q " + f.secs(c.queue_s), "ttft " + f.secs(c.to_first_token_s), "dec " + f.secs(c.decode_s)];
    return "#" + c.seq + " · " + (c.node || "?") + "\n" +
      f.tokens(c.cached_tokens) + " cached + " + f.tokens(c.new_prompt_tokens) + " new → " + f.tokens(c.output_tokens) + " out\n" +
      timing.join(" · ") + "\n" + c.outcome + (c.finish_reason ? " (" + c.finish_reason + ")" : "");
  }

  function toolLabel(t) {
    return t.name + "\n" + (t.ended_at ? f.secs(t.duration_s) : "running…");
  }

  function outcomeColor(c) {
    if (c.outcome === "completed") { return "#1f8a4c"; }
    if (c.outcome === "pending") { return "#2f5fd0"; }
    return "#c0392b";
  }

  function drawGraph(d) {
    var items = steps(d);
    var elements = [];
    items.forEach(function (item, i) {
      var row = Math.floor(i / PER_ROW), col = i % PER_ROW;
      if (row % 2 === 1) { col = PER_ROW - 1 - col; }  // snake: the next row comes back
      var id = item.kind === "call" ? "call-" + item.seq : "tool-" + item.index;
      var data = item.kind === "call" ?
        {id: id, label: callLabel(item.call), kind: "call", color: outcomeColor(item.call)} :
        {id: id, label: toolLabel(item.tool), kind: "tool", color: item.tool.ended_at ? "#7a8397" : "#2f5fd0"};
      elements.push({group: "nodes", data: data, position: {x: col * 230, y: row * 130}});
      if (i > 0) {
        var prev = elements.filter(function (e) { return e.group === "nodes"; }).slice(-2)[0];
        elements.push({group: "edges", data: {id: "e" + i, source: prev.data.id, target: id}});
      }
    });
    var container = document.getElementById("execution-graph");
    var rows = Math.max(1, Math.ceil(items.length / PER_ROW));
    container.style.height = Math.min(900, Math.max(220, rows * 130 + 60)) + "px";
    container.dataset.nodeCount = String(items.length);
    container.dataset.calls = String(d.calls.length);
    container.dataset.toolCalls = String(d.tool_calls.length);
    if (typeof cytoscape === "undefined") { return; }
    if (cy === null) {
      cy = cytoscape({
        container: container, elements: elements, layout: {name: "preset", fit: true, padding: 24},
        minZoom: 0.3, maxZoom: 1.5,
        userZoomingEnabled: true, boxSelectionEnabled: false, autoungrabify: true,
        style: [
          {selector: "node", style: {"label": "data(label)", "text-wrap": "wrap", "text-valign": "center",
            "font-size": 10, "color": "#1d2330", "background-color": "#fff", "border-width": 2,
            "border-color": "data(color)", "width": 190, "height": 74, "shape": "round-rectangle",
            "text-max-width": 180}},
          {selector: "node[kind = 'tool']", style: {"shape": "ellipse", "width": 120, "height": 48,
            "background-color": "#f1f3f7"}},
          {selector: "edge", style: {"width": 1.5, "line-color": "#9aa3b5", "target-arrow-color": "#9aa3b5",
            "target-arrow-shape": "triangle", "curve-style": "bezier"}},
        ],
      });
      window.SagaWorkflowGraph = cy;
    } else {
      cy.json({elements: elements});
      cy.resize();
      cy.fit(undefined, 24);
    }
    if (cy.zoom() < 0.75) { cy.zoom(0.75); cy.pan({x: 24, y: 24}); }  // readable; pan for the rest
  }

  function facts(d) {
    var w = d.workflow;
    var cards = [["state", S.badge(w.state)], ["tenant", w.tenant], ["template", w.template],
      ["home node", w.home_node || "-"], ["calls", String(d.calls.length)], ["tool calls", String(d.tool_calls.length)],
      ["submitted", f.datetime(w.submitted_at)]];
    var box = document.getElementById("facts");
    box.innerHTML = "";
    cards.forEach(function (c) {
      box.appendChild(el("div", {class: "card", "data-fact": c[0]}, [el("div", {class: "v"}, [c[1]]), el("div", {class: "k", text: c[0]})]));
    });
  }

  function kv(pairs) {
    var dl = el("dl", {class: "kv"});
    pairs.forEach(function (p) { dl.appendChild(el("dt", {text: p[0]})); dl.appendChild(el("dd", {}, [p[1]])); });
    return dl;
  }

  function forecast(d) {
    var box = document.getElementById("forecast");
    box.innerHTML = "";
    box.appendChild(el("h2", {style: "margin-top:0", text: "Next step (execution graph's forecast)"}));
    var fc = d.forecast;
    if (!fc) {
      box.appendChild(el("p", {class: "muted", text: "The workflow has ended: nothing to forecast."}));
      return;
    }
    var where = {"new": "not called yet", "call": "a call is in flight", "tool": "running tool " + fc.tool + " for " + f.secs(fc.elapsed_s), "after_call": "between calls (no tool reported)"}[fc.state] || fc.state;
    var pairs = [["now", where],
      ["P(another call)", f.pct(fc.p_next_call)],
      ["expected time to it", f.secs(fc.expected_gap_s)],
      ["context it re-reads", f.tokens(fc.reuse_tokens) + " tokens"],
      ["calls still to come", f.num(fc.expected_remaining_calls, 1)]];
    if (fc.tool_duration) {
      pairs.push(["predicted tool duration", f.secs(fc.tool_duration.predicted_total_s) + " in all (median " + f.secs(fc.tool_duration.median_s) + (fc.tool_duration.learned ? "" : ", not seen before: the template's pooled tools") + ")"]);
    }
    var r = fc.retention || {};
    var decision = r.seconds === null || r.seconds === undefined ? (r.note || "-") :
      (r.seconds > 0 ? "keep its KV cache pinned for " + f.secs(r.seconds) : "do not pin its KV cache") + " " + (r.when || "");
    pairs.push(["retention (" + (r.policy || "no eviction policy") + ")", decision]);
    pairs.push(["learned from", f.int(fc.workflows_learned) + " workflows of " + d.workflow.template]);
    box.appendChild(kv(pairs));
    box.appendChild(el("p", {class: "small muted", text: "Computed by the control plane from its records with the template's learned graph and the eviction policy in force; the home node decides with its own view, so its pin may differ slightly."}));
  }

  function outcome(d) {
    var w = d.workflow, box = document.getElementById("outcome");
    box.innerHTML = "";
    box.appendChild(el("h2", {style: "margin-top:0", text: "Slowdown and SLO"}));
    if (!w.finished_at) {
      box.appendChild(el("p", {class: "muted", text: "Known once the workflow ends (tenant SLO: " + w.slo + ")."}));
      return;
    }
    box.appendChild(kv([["SLO status", w.slo_status ? S.badge(w.slo_status) : "-"],
      ["slowdown", w.slowdown === null ? "-" : f.num(w.slowdown) + "x (SLO " + w.slo + ")"],
      ["task completion time", f.secs(w.tct_s)], ["isolated time", f.secs(w.est_isolated_s)],
      ["recompute", f.tokens(w.recompute_tokens) + " tokens"],
      ["isolated time from", w.isolated_basis || "-"], ["finished", f.datetime(w.finished_at)]]));
  }

  function tables(d) {
    var body = document.querySelector("#call-table tbody");
    body.innerHTML = "";
    d.calls.forEach(function (c) {
      body.appendChild(el("tr", {"data-seq": c.seq}, [
        el("td", {class: "num", text: String(c.seq)}), el("td", {"data-field": "node", text: c.node || "-"}),
        el("td", {class: "num", "data-field": "prompt_tokens", text: f.int(c.prompt_tokens)}),
        el("td", {class: "num", "data-field": "cached_tokens", text: f.int(c.cached_tokens)}),
        el("td", {class: "num", text: f.int(c.new_prompt_tokens)}),
        el("td", {class: "num", "data-field": "output_tokens", text: f.int(c.output_tokens)}),
        el("td", {class: "num", text: f.secs(c.queue_s)}), el("td", {class: "num", text: f.secs(c.to_first_token_s)}),
        el("td", {class: "num", text: f.secs(c.decode_s)}), el("td", {class: "num", text: f.secs(c.latency_s)}),
        el("td", {"data-field": "outcome"}, [S.badge(c.outcome)]), el("td", {"data-field": "finish_reason", text: c.finish_reason || "-"}),
      ]));
    });
    var tools = document.querySelector("#tool-table tbody");
    tools.innerHTML = "";
    d.tool_calls.forEach(function (t) {
      tools.appendChild(el("tr", {}, [el("td", {"data-field": "name", text: t.name}),
        el("td", {class: "num", text: t.after_call_seq === null ? "-" : String(t.after_call_seq)}),
        el("td", {text: f.time(t.started_at)}),
        el("td", {class: "num", "data-field": "duration", text: t.ended_at ? f.secs(t.duration_s) : "running"})]));
    });
    if (!d.tool_calls.length) {
      tools.appendChild(el("tr", {}, [el("td", {colSpan: 4, class: "muted", text: "No tool calls yet."})]));
    }
  }

  function render(d) {
    state = d;
    facts(d); drawGraph(d); forecast(d); outcome(d); tables(d);
  }

  render(state);
  S.connect("/ws/ui/workflows/" + state.workflow.id + "/", function (message) {
    if (message.type === "workflow") { render(message); }
  });
})();
