// Live updates of a dashboard page: every two seconds the page is fetched again and its
// main#live element replaced by the fresh one (HTML the server rendered and escaped), so
// a deployment's progress shows without a reload. A signed-out session stops the updates.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || document.querySelector("form[action='/sign-in']")) {
    return;
  }
  var busy = false;
  function refresh() {
    if (busy) {
      return;
    }
    busy = true;
    fetch(window.location.href, {
      credentials: "same-origin",
      cache: "no-store",
      redirect: "manual",
      headers: { "X-Hoist-Live": "1" },
    })
      .then(function (r) {
        if (r.status !== 200) {
          return null;
        }
        return r.text();
      })
      .then(function (body) {
        if (body === null) {
          return;
        }
        var fresh = new DOMParser()
          .parseFromString(body, "text/html")
          .getElementById("live");
        if (fresh && fresh.innerHTML !== live.innerHTML) {
          // A copy first: adopting a node takes it out of the live childNodes list.
          var nodes = Array.prototype.slice.call(fresh.childNodes);
          live.replaceChildren.apply(
            live,
            nodes.map(function (n) {
              return document.adoptNode(n);
            })
          );
        }
        document.body.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () {})
      .then(function () {
        busy = false;
      });
  }
  window.setInterval(refresh, 2000);
})();
