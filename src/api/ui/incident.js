// Live output of an incident's running steps (server-sent events).
(function () {
  var es = new EventSource(location.pathname + "/events");
  es.addEventListener("output", function (e) {
    var d = JSON.parse(e.data);
    var pre = document.getElementById("live-" + d.run);
    if (!pre) {
      var run = document.getElementById("run-" + d.run);
      if (!run) { return; }
      pre = document.createElement("pre");
      pre.className = "live";
      pre.id = "live-" + d.run;
      run.appendChild(pre);
    }
    pre.textContent += d.text;
  });
  es.addEventListener("done", function () { es.close(); setTimeout(function () { location.reload(); }, 300); });
})();
