// The console's own script: small conveniences on top of pages that work without it.
// Loaded from /static (the Content-Security-Policy allows no inline script).
"use strict";

(function () {
  // Times: the server writes UTC; show them in the browser's time zone and language.
  function localTimes(root) {
    var lang = document.documentElement.lang || undefined;
    var format = new Intl.DateTimeFormat(lang, { dateStyle: "medium", timeStyle: "short" });
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var moment = new Date(el.getAttribute("datetime"));
      if (!isNaN(moment.getTime())) {
        el.title = el.getAttribute("datetime");
        el.textContent = format.format(moment);
      }
    });
  }

  // A file input with data-preview shows the chosen image before the form is saved.
  function previews(root) {
    root.querySelectorAll("input[type=file][data-preview]:not([data-previewing])").forEach(function (input) {
      input.setAttribute("data-previewing", "");
      input.addEventListener("change", function () {
        var img = document.getElementById(input.getAttribute("data-preview"));
        var file = input.files && input.files[0];
        if (!img) return;
        if (file) {
          img.src = URL.createObjectURL(file);
          img.hidden = false;
        }
      });
    });
  }

  // A button with data-copy copies the value of the field it names (the playlist link).
  function copyButtons(root) {
    root.querySelectorAll("button[data-copy]:not([data-copying])").forEach(function (button) {
      button.setAttribute("data-copying", "");
      var label = button.textContent;
      button.addEventListener("click", function () {
        var field = document.getElementById(button.getAttribute("data-copy"));
        if (!field) return;
        field.select();
        var done = function () {
          button.textContent = button.getAttribute("data-copied") || label;
          setTimeout(function () { button.textContent = label; }, 2000);
        };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(field.value).then(done, function () {});
        } else if (document.execCommand("copy")) {
          done();
        }
      });
    });
  }

  // A select with data-toggles shows the element it names only for the option that
  // element's data-shown-for names (the fields of an HTTP SMS gateway).
  function toggles(root) {
    root.querySelectorAll("select[data-toggles]").forEach(function (select) {
      var target = document.getElementById(select.getAttribute("data-toggles"));
      if (!target) return;
      var update = function () { target.hidden = select.value !== target.getAttribute("data-shown-for"); };
      select.addEventListener("change", update);
      update();
    });
  }

  // Chart labels (<span data-hour>): the hour in the browser's time zone.
  function localHours(root) {
    var lang = document.documentElement.lang || undefined;
    var format = new Intl.DateTimeFormat(lang, { hour: "2-digit", minute: "2-digit" });
    root.querySelectorAll("[data-hour]").forEach(function (el) {
      var moment = new Date(el.getAttribute("data-hour"));
      if (!isNaN(moment.getTime())) el.textContent = format.format(moment);
    });
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  // Time filters (input[type=datetime-local][data-utc]): the server writes and reads
  // UTC; the person sees and types the browser's time zone.
  function localInputs(root) {
    root.querySelectorAll("input[data-utc]:not([data-local])").forEach(function (input) {
      input.setAttribute("data-local", "");
      var moment = new Date(input.value + "Z");
      if (input.value && !isNaN(moment.getTime())) {
        input.value = moment.getFullYear() + "-" + pad(moment.getMonth() + 1) + "-" + pad(moment.getDate()) +
          "T" + pad(moment.getHours()) + ":" + pad(moment.getMinutes());
      }
      var form = input.form;
      if (form && !form.hasAttribute("data-utc-form")) {
        form.setAttribute("data-utc-form", "");
        form.addEventListener("submit", function () {
          form.querySelectorAll("input[data-utc]").forEach(function (field) {
            var local = new Date(field.value);
            if (field.value && !isNaN(local.getTime())) field.value = local.toISOString().slice(0, 16);
          });
        });
      }
    });
  }

  function enhance(root) {
    localTimes(root);
    localHours(root);
    localInputs(root);
    previews(root);
    copyButtons(root);
    toggles(root);
  }

  // A form that came back with errors: bring its first invalid field into view, focused
  // (on a long page, such as Portal settings, it may be far below the top).
  function focusFirstError() {
    var invalid = document.querySelector("main [aria-invalid='true']");
    if (invalid && !invalid.disabled) invalid.focus();
  }

  document.addEventListener("DOMContentLoaded", function () {
    enhance(document);
    focusFirstError();
  });
  // htmx:load fires on every element htmx brings into the page.
  document.addEventListener("htmx:load", function (event) { enhance(event.target); });
})();
