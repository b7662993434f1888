/* patchflow console: small hand-written enhancements. Every page works without it (forms
   post normally, destructive actions get a server-side confirmation page); with it, confirms
   are dialogs, the endpoints dialog applies in place, and running work refreshes itself. */
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  var csrf = document.body.getAttribute("data-csrf") || "";

  /* Destructive actions: confirm, then tell the server the question was asked. */
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (!question) return;
    if (!window.confirm(question)) { event.preventDefault(); return; }
    var field = form.querySelector('input[name="confirmed"]');
    if (field) field.value = "yes";
  });

  /* Dialogs: [data-open=id] opens, [data-close] closes the dialog it is in. */
  document.addEventListener("click", function (event) {
    var opener = event.target.closest("[data-open]");
    if (opener) {
      var dialog = document.getElementById(opener.getAttribute("data-open"));
      if (dialog && dialog.showModal) { dialog.showModal(); updateCounts(dialog); }
      return;
    }
    var closer = event.target.closest("[data-close]");
    if (closer) { var open = closer.closest("dialog"); if (open) open.close(); }
  });
  document.querySelectorAll("dialog[data-open-on-load]").forEach(function (d) {
    if (d.showModal) d.showModal();
  });
  if (location.hash === "#endpoints") {
    var d = document.getElementById("endpoints-dialog");
    if (d && d.showModal) { d.showModal(); }
  }

  /* "Select all" boxes and "N selected" counters. */
  function updateCounts(scope) {
    (scope || document).querySelectorAll("[data-count-of]").forEach(function (counter) {
      var root = counter.closest("form") || document;
      var name = counter.getAttribute("data-count-of");
      var n = root.querySelectorAll('input[name="' + name + '"]:checked').length;
      counter.textContent = n + (counter.getAttribute("data-count-suffix") || "");
    });
  }
  document.addEventListener("change", function (event) {
    var box = event.target;
    var all = box.getAttribute && box.getAttribute("data-check-all");
    if (all) {
      var root = box.closest("form") || document;
      root.querySelectorAll('input[name="' + all + '"]:not(:disabled)').forEach(function (b) {
        b.checked = box.checked;
      });
    }
    var section = box.getAttribute && box.getAttribute("data-all-for");
    if (section) allToggle(box);
    if (box.type === "radio") showWhen();
    var autosubmit = box.closest && box.closest("form[data-autosubmit]");
    if (autosubmit) autosubmit.submit();
    updateCounts();
  });
  updateCounts();

  /* Filters dialog: "All" disables the section's individual choices. */
  function allToggle(box) {
    var form = box.closest("form");
    var name = box.getAttribute("data-all-for");
    form.querySelectorAll('input[name="' + name + '"], [data-part-of="' + name + '"]').forEach(
      function (input) {
        input.disabled = box.checked;
        if (box.checked && input.type === "checkbox") input.checked = false;
      });
  }
  document.querySelectorAll("[data-all-for]").forEach(allToggle);

  /* Upstream choice: show only the fields of the chosen kind. */
  function showWhen() {
    document.querySelectorAll("[data-show-when]").forEach(function (el) {
      var rule = el.getAttribute("data-show-when").split("=");
      var chosen = document.querySelector('input[name="' + rule[0] + '"]:checked');
      el.hidden = !chosen || chosen.value !== rule[1];
    });
  }
  showWhen();

  /* Forms marked data-async post in place and update [data-selected-count]. */
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.hasAttribute("data-async") || event.defaultPrevented) return;
    event.preventDefault();
    var errorBox = form.querySelector(".form-error");
    fetch(form.action, {
      method: "POST", credentials: "same-origin",
      headers: {"Accept": "application/json", "X-CSRF-Token": csrf,
                "Content-Type": "application/x-www-form-urlencoded"},
      body: new URLSearchParams(new FormData(form)).toString()
    }).then(function (response) {
      return response.json().then(function (body) { return {ok: response.ok, body: body}; });
    }).then(function (result) {
      if (!result.ok) {
        if (errorBox) { errorBox.textContent = result.body.error || "failed"; errorBox.hidden = false; }
        return;
      }
      if (errorBox) errorBox.hidden = true;
      document.querySelectorAll("[data-selected-count]").forEach(function (el) {
        el.textContent = result.body.selected;
      });
      var message = document.getElementById("async-message");
      if (message) {
        message.textContent = result.body.message + (result.body.note ? " " + result.body.note : "");
        message.hidden = false;
      }
      var dialog = form.closest("dialog");
      if (dialog) dialog.close();
    }).catch(function () {
      if (errorBox) { errorBox.textContent = "The server did not answer; try again."; errorBox.hidden = false; }
    });
  });

  /* Live refresh: [data-poll=url][data-running=true] re-renders from {html, running} every
     two seconds until the work is done, keeping ticked boxes and opened details. */
  function poll(el) {
    var url = el.getAttribute("data-poll");
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) {
        if (response.status === 401) { location.reload(); return null; }
        return response.ok ? response.json() : null;
      })
      .then(function (body) {
        if (!body) { setTimeout(function () { poll(el); }, 5000); return; }
        if (typeof body.html === "string") {
          var ticked = {};
          el.querySelectorAll("input[type=checkbox]:checked").forEach(function (b) {
            ticked[b.name + "=" + b.value] = true;
          });
          var opened = {};
          el.querySelectorAll("details[open]").forEach(function (det) {
            var row = det.closest("[data-item]");
            if (row) opened[row.getAttribute("data-item")] = true;
          });
          el.innerHTML = body.html;
          el.querySelectorAll("input[type=checkbox]").forEach(function (b) {
            if (ticked[b.name + "=" + b.value]) b.checked = true;
          });
          el.querySelectorAll("[data-item]").forEach(function (row) {
            var det = row.querySelector("details");
            if (det && opened[row.getAttribute("data-item")]) det.open = true;
          });
          updateCounts();
        }
        el.setAttribute("data-running", body.running ? "true" : "false");
        if (body.running) {
          setTimeout(function () { poll(el); }, 2000);
        } else if (el.hasAttribute("data-reload-when-done")) {
          location.reload();
        }
      })
      .catch(function () { setTimeout(function () { poll(el); }, 5000); });
  }
  document.querySelectorAll("[data-poll][data-running=true]").forEach(function (el) {
    setTimeout(function () { poll(el); }, 1500);
  });
})();
