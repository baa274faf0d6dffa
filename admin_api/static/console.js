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

  function enhance(root) {
    localTimes(root);
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
