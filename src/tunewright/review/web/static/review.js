// Keyboard-first reviewing on top of plain HTML forms: every page also works without this file.
"use strict";
document.documentElement.classList.add("js");

(function () {
  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  // Letters are shortcuts only when the reviewer is not typing somewhere.
  function typing(el) {
    if (!el || !el.tagName) return false;
    if (el.isContentEditable) return true;
    if (el.tagName === "TEXTAREA" || el.tagName === "SELECT") return true;
    if (el.tagName !== "INPUT") return false;
    return ["checkbox", "radio", "button", "submit", "reset"].indexOf(el.type) < 0;
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrf()},
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        return {ok: response.ok, status: response.status, data: data};
      });
    });
  }

  function follow(selector) {
    var link = document.querySelector(selector);
    if (link) location.assign(link.href);
  }

  function ItemPage(form) {
    var panel = document.getElementById("reject-panel");
    var help = document.getElementById("help");
    var errorBox = document.getElementById("error");
    var boxes = Array.prototype.slice.call(form.querySelectorAll(".turn textarea"));
    var busy = false;
    var previewTimer = null;

    // Time on the item counts only while its tab is visible.
    var spent = 0;
    var since = document.hidden ? null : performance.now();
    document.addEventListener("visibilitychange", function () {
      if (document.hidden && since !== null) { spent += performance.now() - since; since = null; }
      else if (!document.hidden && since === null) { since = performance.now(); }
    });
    function seconds() { return (spent + (since === null ? 0 : performance.now() - since)) / 1000; }

    function dirty() { return boxes.some(function (b) { return b.value !== b.defaultValue; }); }
    function panelOpen() { return !!panel && panel.classList.contains("open"); }

    function showError(message) {
      errorBox.textContent = message;
      errorBox.hidden = false;
    }

    function setBusy(on) {
      busy = on;
      Array.prototype.forEach.call(form.querySelectorAll("button"), function (b) { b.disabled = on; });
    }

    function decide(decision) {
      if (busy || !panel) return;
      setBusy(true);
      errorBox.hidden = true;
      var rating = form.querySelector('input[name="rating"]:checked');
      var rejecting = decision === "reject";
      var body = {
        decision: decision,
        rating: rating ? Number(rating.value) : null,
        reasons: rejecting ? Array.prototype.map.call(
          form.querySelectorAll('input[name="reasons"]:checked'), function (c) { return c.value; }) : [],
        note: rejecting ? form.querySelector('input[name="note"]').value : "",
        turns: boxes.length ? boxes.map(function (b) { return b.value; }) : null,
        seconds: seconds()
      };
      // The page moves on only once the server has committed the decision.
      post(form.action, body).then(function (res) {
        if (res.ok && res.data.next) { location.assign(res.data.next); return; }
        setBusy(false);
        showError((res.data && res.data.error) || ("the server answered " + res.status + "; nothing was saved"));
      }, function () {
        setBusy(false);
        showError("could not reach the server; nothing was saved. Try again.");
      });
    }

    function openReject() {
      if (!panel) return;
      panel.classList.add("open");
      var first = panel.querySelector('input[type="checkbox"]') || panel.querySelector("input");
      if (first) first.focus();
    }

    function closeReject() { if (panel) panel.classList.remove("open"); }

    function toggleEdit() {
      if (!boxes.length) return;
      var on = form.classList.toggle("editing");
      if (on) {
        var box = boxes[boxes.length - 1];  // the answer is what usually needs fixing
        box.focus();
        box.setSelectionRange(box.value.length, box.value.length);
      } else if (document.activeElement && boxes.indexOf(document.activeElement) >= 0) {
        document.activeElement.blur();
      }
    }

    function refreshDiff() {
      post(form.dataset.preview, {turns: boxes.map(function (b) { return b.value; })}).then(function (res) {
        if (!res.ok) return;
        var diffs = form.querySelectorAll(".turn .diff");
        res.data.diffs.forEach(function (html, i) {
          diffs[i].innerHTML = html || "";  // escaped by the server; only <ins>/<del> are markup
          diffs[i].hidden = !html;
        });
      });
    }

    boxes.forEach(function (box) {
      box.addEventListener("input", function () {
        clearTimeout(previewTimer);
        previewTimer = setTimeout(refreshDiff, 250);
      });
    });

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      decide(event.submitter && event.submitter.value === "reject" ? "reject" : "accept");
    });

    document.querySelectorAll("[data-action]").forEach(function (button) {
      button.addEventListener("click", function () {
        var action = button.dataset.action;
        if (action === "reject") openReject();
        else if (action === "edit") toggleEdit();
        else if (action === "help") help.hidden = !help.hidden;
      });
    });

    window.addEventListener("beforeunload", function (event) {
      if (!busy && dirty()) { event.preventDefault(); event.returnValue = ""; }
    });

    this.key = function (event) {
      var target = event.target;
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        decide(panelOpen() ? "reject" : "accept");
        return true;
      }
      if (event.key === "Escape") {
        if (help && !help.hidden) help.hidden = true;
        else if (typing(target)) target.blur();
        else closeReject();
        return true;
      }
      var onControl = target && (target.tagName === "BUTTON" || target.tagName === "A");
      if (event.key === "Enter" && panelOpen() && !onControl && (!typing(target) || panel.contains(target))) {
        event.preventDefault();
        decide("reject");
        return true;
      }
      if (typing(target)) return true;
      if (event.ctrlKey || event.metaKey || event.altKey) return false;
      if (event.key === "a") decide("accept");
      else if (event.key === "r") { event.preventDefault(); openReject(); }
      else if (event.key === "e") { event.preventDefault(); toggleEdit(); }
      else if (/^[1-5]$/.test(event.key)) {
        var radio = form.querySelector('input[name="rating"][value="' + event.key + '"]');
        if (radio) radio.checked = true;
      } else return false;
      return true;
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("decision-form");
    var page = form ? new ItemPage(form) : null;
    var help = document.getElementById("help");
    document.addEventListener("keydown", function (event) {
      if (event.defaultPrevented || event.isComposing) return;
      if (page && page.key(event)) return;
      if (typing(event.target) || event.ctrlKey || event.metaKey || event.altKey) return;
      if (event.key === "j" || event.key === "n") follow('[data-nav="next"]');
      else if (event.key === "k" || event.key === "p") follow('[data-nav="prev"]');
      else if (event.key === "?" && help) help.hidden = !help.hidden;
    });
  });
})();
