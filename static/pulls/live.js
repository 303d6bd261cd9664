// Live parts of a page: an element with data-live-url is refreshed from that
// URL (a server-rendered fragment) every data-live-every milliseconds. It
// stops when the server marks the fragment final (data-live-final), then
// reloads the page once so everything else on it is current too. Without
// JavaScript the page still works: it just does not update by itself.
(function () {
  "use strict";
  // Screen readers hear state changes only, not every refresh of the numbers.
  function announced(el) {
    return Array.prototype.map.call(el.querySelectorAll("[data-live-announce]"), function (n) {
      return n.textContent.trim();
    }).join(". ");
  }
  function say(text) {
    var box = document.getElementById("live-announcer");
    if (box && text) { box.textContent = text; }
  }
  function watch(el) {
    var url = el.getAttribute("data-live-url");
    var every = parseInt(el.getAttribute("data-live-every") || "2000", 10);
    var failures = 0;
    function tick() {
      if (document.hidden) { return setTimeout(tick, every); }
      fetch(url, { headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" })
        .then(function (response) {
          if (!response.ok) { throw new Error(response.status); }
          return response.text();
        })
        .then(function (html) {
          failures = 0;
          var wasFinal = el.querySelector("[data-live-final]") !== null;
          var before = announced(el);
          el.innerHTML = html;
          var after = announced(el);
          if (after !== before) { say(after); }
          el.setAttribute("data-live-updated", String(Date.now()));
          if (el.querySelector("[data-live-final]") && !wasFinal && el.hasAttribute("data-live-reload")) {
            window.location.reload();
            return;
          }
          if (!el.querySelector("[data-live-final]")) { setTimeout(tick, every); }
        })
        .catch(function () {
          failures += 1;  // the server restarts, the network drops: back off, keep trying
          setTimeout(tick, Math.min(30000, every * Math.pow(2, failures)));
        });
    }
    if (!el.querySelector("[data-live-final]")) { setTimeout(tick, Math.min(every, 1000)); }
  }
  document.querySelectorAll("[data-live-url]").forEach(watch);
})();
