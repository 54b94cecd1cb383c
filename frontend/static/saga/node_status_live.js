// Live node status in the admin's node list: listens to /ws/ui/cluster/ (staff session,
// same origin) and updates each node's status, heartbeat and load cells as heartbeats arrive.
document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  if (!document.querySelector("#result_list")) { return; }
  var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
  var retryMs = 1000;

  function rowFor(name) {
    var links = document.querySelectorAll("#result_list td.field-name a, #result_list th.field-name a");
    for (var i = 0; i < links.length; i++) {
      if (links[i].textContent.trim() === name) { return links[i].closest("tr"); }
    }
    return null;
  }

  function setCell(row, field, text) {
    var cell = row.querySelector(".field-" + field);
    if (cell && cell.textContent !== text) {
      cell.textContent = text;
      cell.classList.add("saga-updated");
      setTimeout(function () { cell.classList.remove("saga-updated"); }, 800);
    }
  }

  function connect() {
    var socket = new WebSocket(scheme + window.location.host + "/ws/ui/cluster/");
    socket.onopen = function () { retryMs = 1000; };
    socket.onmessage = function (message) {
      var event = JSON.parse(message.data);
      if (event.type !== "node.status") { return; }
      var row = rowFor(event.node);
      if (!row) { return; }
      setCell(row, "status", event.status.charAt(0).toUpperCase() + event.status.slice(1));
      if (event.last_heartbeat_at) {
        setCell(row, "last_heartbeat_at", new Date(event.last_heartbeat_at).toLocaleString());
      }
      var load = event.load || {};
      setCell(row, "load_summary", (load.running || 0) + " running, " + (load.waiting || 0) + " waiting");
    };
    socket.onclose = function () {
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 30000);
    };
  }
  connect();
});
