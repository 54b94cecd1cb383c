// The console's shared client: websockets that reconnect with backoff and say when what the
// page shows may be stale, and number formatting used by every page.
(function () {
  "use strict";
  var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
  var sockets = [];

  function clock(date) {
    return date.toLocaleTimeString("en-GB", {hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false});
  }

  function indicator(state, text) {
    var el = document.getElementById("live-indicator");
    if (!el) { return; }
    el.dataset.state = state;
    el.querySelector(".text").textContent = text;
    document.body.classList.toggle("stale", state === "stale" || state === "denied");
    var banner = document.querySelector(".stale-banner");
    if (banner) { banner.textContent = state === "denied" ? text : "Connection lost: " + text; }
  }

  // connect("/ws/ui/nodes/", onMessage): every message is a JSON object. On a close the socket
  // retries after 1 s, doubling to at most 30 s (with jitter); the server sends the page's
  // whole state on every (re)connection, so nothing missed in between stays missing.
  function connect(path, onMessage) {
    var retryMs = 1000;
    var lastData = null;
    var entry = {path: path, socket: null};
    sockets.push(entry);
    function open() {
      indicator(lastData ? "stale" : "connecting",
                lastData ? "reconnecting; showing data as of " + clock(lastData) : "connecting");
      var socket = new WebSocket(scheme + window.location.host + path);
      entry.socket = socket;
      socket.onopen = function () { retryMs = 1000; };
      socket.onmessage = function (message) {
        lastData = new Date();
        indicator("live", "live, updated " + clock(lastData));
        onMessage(JSON.parse(message.data));
      };
      socket.onclose = function (event) {
        if (event.code === 4401 || event.code === 4403) {
          indicator("denied", "not signed in as staff any more: reload the page to sign in");
          return;
        }
        if (event.code === 4404) {
          indicator("denied", "this object no longer exists");
          return;
        }
        var wait = retryMs * (0.8 + Math.random() * 0.4);
        indicator("stale", (lastData ? "data as of " + clock(lastData) + "; " : "") +
                  "reconnecting in " + Math.round(wait / 1000) + " s");
        setTimeout(open, wait);
        retryMs = Math.min(retryMs * 2, 30000);
      };
    }
    open();
    return entry;
  }

  function dash(value) { return value === null || value === undefined || Number.isNaN(value); }

  var fmt = {
    int: function (v) { return dash(v) ? "-" : Math.round(v).toLocaleString("en-US"); },
    num: function (v, digits) {
      if (dash(v)) { return "-"; }
      return Number(v).toFixed(digits === undefined ? 2 : digits);
    },
    pct: function (v, digits) {
      return dash(v) ? "-" : (100 * v).toFixed(digits === undefined ? 1 : digits) + "%";
    },
    secs: function (v) {
      if (dash(v)) { return "-"; }
      if (v >= 3600) { return (v / 3600).toFixed(1) + " h"; }
      if (v >= 120) { return (v / 60).toFixed(1) + " min"; }
      if (v >= 10) { return v.toFixed(1) + " s"; }
      return v.toFixed(2) + " s";
    },
    time: function (iso) { return iso ? clock(new Date(iso)) : "-"; },
    datetime: function (iso) {
      if (!iso) { return "-"; }
      var d = new Date(iso);
      return d.toISOString().slice(0, 10) + " " + clock(d);
    },
    tokens: function (v) {
      if (dash(v)) { return "-"; }
      if (v >= 1e6) { return (v / 1e6).toFixed(2) + "M"; }
      if (v >= 1e4) { return (v / 1e3).toFixed(1) + "k"; }
      return Math.round(v).toLocaleString("en-US");
    },
  };

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") { node.textContent = attrs[key]; }
      else if (key === "class") { node.className = attrs[key]; }
      else if (key.slice(0, 5) === "data-") { node.setAttribute(key, attrs[key]); }
      else { node[key] = attrs[key]; }
    });
    (children || []).forEach(function (child) {
      if (child === null || child === undefined) { return; }
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  function badge(status, text) {
    return el("span", {class: "badge " + (status || ""), text: text || status || "-"});
  }

  // A sparkline of the values (nulls skipped), scaled to [0, max(1e-9, max value)].
  function sparkline(values, opts) {
    opts = opts || {};
    var w = opts.width || 72, h = opts.height || 18;
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("width", w);
    svg.setAttribute("height", h);
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    var points = values.map(function (v, i) { return [i, v]; })
      .filter(function (p) { return !dash(p[1]); });
    if (points.length < 2) { return svg; }
    var max = opts.max !== undefined ? opts.max : Math.max.apply(null, points.map(function (p) { return p[1]; }));
    max = Math.max(max, 1e-9);
    var n = values.length - 1;
    var path = points.map(function (p) {
      return (p[0] / n * (w - 2) + 1).toFixed(1) + "," + (h - 1 - Math.min(p[1] / max, 1) * (h - 2)).toFixed(1);
    }).join(" ");
    var line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", path);
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", opts.color || "#2f5fd0");
    line.setAttribute("stroke-width", "1.3");
    svg.appendChild(line);
    var title = document.createElementNS(ns, "title");
    title.textContent = opts.title || "";
    svg.appendChild(title);
    return svg;
  }

  function initial(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  window.Saga = {connect: connect, fmt: fmt, el: el, badge: badge, sparkline: sparkline,
                 initial: initial, sockets: sockets};
})();
