// Live output of an incident's running steps (server-sent events). The
// stream starts after what the page already shows (data-after), and the
// browser resumes after the last event it got (Last-Event-ID) when it
// reconnects, so no line is shown twice.
(function () {
  var after = document.currentScript ? document.currentScript.getAttribute("data-after") : "0";
  var es = new EventSource(location.pathname + "/events?after=" + encodeURIComponent(after || "0"));
  es.addEventListener("output", function (e) {
    var d = JSON.parse(e.data);
    var pre = document.getElementById("live-" + d.run);
    if (!pre) {
      var run = document.getElementById("run-" + d.run);
      if (!run) { return; }
      var h = document.createElement("h3");
      h.className = "muted";
      h.textContent = "Live output";
      run.appendChild(h);
      pre = document.createElement("pre");
      pre.className = "live";
      pre.id = "live-" + d.run;
      pre.setAttribute("data-step", "");
      run.appendChild(pre);
    }
    if (pre.getAttribute("data-step") !== d.step) {
      var t = pre.textContent;
      pre.textContent += (t && t.charAt(t.length - 1) !== "\n" ? "\n" : "") + "── " + d.step + " ──\n";
      pre.setAttribute("data-step", d.step);
    }
    pre.textContent += d.text;
  });
  es.addEventListener("done", function () { es.close(); setTimeout(function () { location.reload(); }, 300); });
})();
