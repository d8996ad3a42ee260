// Times in the reader's own time zone (the page shows UTC without script).
(function () {
  var items = document.querySelectorAll("time[datetime]");
  for (var i = 0; i < items.length; i++) {
    var t = new Date(items[i].getAttribute("datetime"));
    if (isNaN(t.getTime())) { continue; }
    items[i].title = items[i].textContent;
    items[i].textContent = t.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }
})();
