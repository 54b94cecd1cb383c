// Plotly charts of the SLO series (points as GET /api/admin/tenants/{slug}/slo/series returns
// them) shared by the tenants pages.
(function () {
  "use strict";
  var COLORS = ["#2f5fd0", "#c0392b", "#1f8a4c", "#b7791f", "#7b3fb8", "#0f8b8d", "#d35400"];
  var CONFIG = {displaylogo: false, responsive: true};

  var MIN_SPAN_MS = 10 * 60 * 1000;

  // The time axis spans the points, and at least 10 minutes (a young series is not stretched
  // over a few seconds).
  function axisTime(points) {
    var axis = {title: {text: "time (UTC)"}, type: "date"};
    if (points && points.length) {
      var last = new Date(points[points.length - 1].window_end).getTime();
      var first = new Date(points[0].window_start).getTime();
      if (last - first < MIN_SPAN_MS) { axis.range = [new Date(last - MIN_SPAN_MS).toISOString(), new Date(last + 15000).toISOString()]; }
    }
    return axis;
  }

  function base(extra, points) {
    var layout = {margin: {l: 55, r: 15, t: 10, b: 45}, xaxis: axisTime(points), legend: {orientation: "h", y: -0.22},
      hovermode: "x unified"};
    Object.keys(extra || {}).forEach(function (k) { layout[k] = extra[k]; });
    return layout;
  }

  function ends(points) { return points.map(function (p) { return p.window_end; }); }
  function values(points, key) { return points.map(function (p) { return p[key]; }); }

  function objectiveLine(points, percentile, color, name) {
    var x = ends(points);
    if (!x.length) { return null; }
    return {x: [x[0], x[x.length - 1]], y: [percentile / 100, percentile / 100], mode: "lines", name: name,
      line: {dash: "dash", color: color, width: 1.5}, hoverinfo: "skip"};
  }

  // Every tenant's cumulative attainment and objective.
  function attainmentAll(div, overviews) {
    var traces = [], longest = [];
    overviews.forEach(function (o, i) {
      if (o.series.points.length > longest.length) { longest = o.series.points; }
      var color = COLORS[i % COLORS.length], points = o.series.points;
      traces.push({x: ends(points), y: values(points, "cum_attainment"), name: o.tenant.slug, mode: "lines+markers",
        marker: {size: 3}, line: {color: color, width: 2}, connectgaps: true, meta: {tenant: o.tenant.slug}});
      var line = objectiveLine(points, o.tenant.slo_percentile, color, o.tenant.slug + " objective");
      if (line) { line.showlegend = false; traces.push(line); }
    });
    Plotly.react(div, traces, base({yaxis: {title: {text: "SLO attainment"}, tickformat: ".0%", range: [0, 1.05]}}, longest), CONFIG);
  }

  // One tenant: cumulative attainment (line), window attainment (dots), objective (dashed).
  function attainment(div, o) {
    var points = o.series.points;
    var traces = [
      {x: ends(points), y: values(points, "cum_attainment"), name: "cumulative", mode: "lines+markers", marker: {size: 3}, line: {color: COLORS[0], width: 2}, connectgaps: true},
      {x: ends(points), y: values(points, "attainment"), name: "in the window", mode: "markers", marker: {color: COLORS[0], size: 5, opacity: 0.45}},
    ];
    var line = objectiveLine(points, o.tenant.slo_percentile, "#c0392b", "objective " + o.tenant.slo_percentile + "%");
    if (line) { traces.push(line); }
    Plotly.react(div, traces, base({yaxis: {title: {text: "SLO attainment"}, tickformat: ".0%", range: [0, 1.05]}}, points), CONFIG);
  }

  function slowdown(div, o) {
    var points = o.series.points, x = ends(points);
    var traces = [
      {x: x, y: values(points, "slowdown_p50"), name: "p50", mode: "lines+markers", marker: {size: 4}, line: {color: COLORS[0]}, connectgaps: true},
      {x: x, y: values(points, "slowdown_p95"), name: "p95", mode: "lines+markers", marker: {size: 4}, line: {color: COLORS[3]}, connectgaps: true},
    ];
    if (x.length) {
      traces.push({x: [x[0], x[x.length - 1]], y: [o.tenant.slo_slowdown, o.tenant.slo_slowdown], mode: "lines",
        name: "SLO " + o.tenant.slo_slowdown + "x", line: {dash: "dash", color: "#c0392b"}, hoverinfo: "skip"});
    }
    Plotly.react(div, traces, base({yaxis: {title: {text: "slowdown (x)"}, rangemode: "tozero"}}, points), CONFIG);
  }

  function distribution(div, o) {
    var s = o.slowdowns || [], slo = o.tenant.slo_slowdown;
    var within = s.filter(function (v) { return v <= slo; }).length;
    var low = Math.min(1, s.length ? Math.min.apply(null, s) : 1) * 0.95;
    var high = Math.max(slo * 1.5, s.length ? Math.max.apply(null, s) * 1.05 : 0);
    var top = s.length ? Math.max.apply(null, s) * 1.01 : high;  // bins over the data, axis to the SLO
    var traces = [{x: s, type: "histogram", name: "workflows", marker: {color: COLORS[0], opacity: 0.75},
      xbins: {start: low, end: top, size: Math.max((top - low) / 30, 0.002)}}];
    var layout = base({xaxis: {title: {text: "slowdown (x)"}, range: [low, high]},
      yaxis: {title: {text: "workflows"}, rangemode: "tozero"}, hovermode: "closest",
      shapes: [{type: "line", x0: slo, x1: slo, yref: "paper", y0: 0, y1: 1, line: {color: "#c0392b", dash: "dash", width: 2}}],
      annotations: [{x: slo, yref: "paper", y: 1, text: "SLO " + slo + "x: " + (s.length ? (100 * within / s.length).toFixed(1) + "% of " + s.length + " within" : "no workflow yet"),
        showarrow: false, xanchor: "left", yanchor: "top", font: {color: "#c0392b"}}]});
    Plotly.react(div, traces, layout, CONFIG);
  }

  // Append a pushed point to an overview's series (ignoring one it already has).
  function addPoint(o, point) {
    if (o.series.resolution_s !== point.resolution_s) { return false; }
    var known = o.series.points.some(function (p) { return p.window_start === point.window_start; });
    if (!known) { o.series.points.push(point); }
    return !known;
  }

  window.SagaSlo = {attainmentAll: attainmentAll, attainment: attainment, slowdown: slowdown,
                    distribution: distribution, addPoint: addPoint};
})();
