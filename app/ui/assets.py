"""The page's own CSS and JavaScript, passed to Gradio once when the server mounts the UI: the label view's cards,
fixed choice bar, raw-text toggle, keyboard shortcuts and scrolling back up to a new comparison, and the review tab's
labels. Nothing here touches untrusted text."""

from app.ui.label import CHOICE_BUTTONS, RAW_KEY, UNDO_KEY

_KEYS = {key: elem for _, _, key, elem in CHOICE_BUTTONS} | {UNDO_KEY: "pf-btn-undo", RAW_KEY: "pf-raw"}
# Keyboard shortcuts: keys typed into a text field are left alone. The raw toggle's id is on its wrapper: the
# click goes to the checkbox inside it, so Gradio sees the same change as a mouse click.
KEYBOARD_JS = """() => {
  const keys = __KEYS__;
  document.addEventListener('keydown', (e) => {
    const t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    if (t && (t.tagName === 'TEXTAREA' || t.tagName === 'INPUT' || t.tagName === 'SELECT' || t.isContentEditable))
      return;
    const id = keys[e.key.toLowerCase()];
    const found = id && document.getElementById(id);
    const target = found && (found.matches('button') ? found : found.querySelector('input'));
    if (target && !target.disabled && target.offsetParent !== null) { e.preventDefault(); target.click(); }
  });
  // A new comparison starts at its top: after a click far down a long response, the next prompt is in view.
  let shown = null;
  new MutationObserver(() => {
    const id = document.querySelector('#pf-cards .pf-cards')?.dataset.comparison || null;
    if (id === shown) return;
    shown = id;
    const top = document.getElementById('pf-toolbar');
    if (top && top.getBoundingClientRect().top < 0) window.scrollTo({top: 0});
  }).observe(document.body, {childList: true, subtree: true});
}""".replace("__KEYS__", repr(_KEYS))

# Gradio's default theme font comes with only some of its weights (its SemiBold and Bold faces lack letters or are
# missing): bold text fell back to another font mid-word. The system's own fonts have every weight, and nothing is
# fetched for them.
SANS = ("system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "Arial", "Noto Sans", "Liberation Sans",
        "sans-serif")
MONO = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono", "DejaVu Sans Mono", "monospace")


def theme():
    """The page's theme: Gradio's default with the system font stacks (SANS, MONO)."""
    import gradio as gr

    return gr.themes.Default(font=SANS, font_mono=MONO)


BAR_SPACE = "170px"  # room under the label view's last element, so the fixed bar never hides it

CSS = """
.pf-response, .pf-prompt { overflow-wrap: anywhere; }
.pf-pane-label, .pf-role { font-weight: 700; opacity: 0.7; text-transform: uppercase; font-size: 0.8em; }
.pf-turn { margin-bottom: 0.75em; }
.pf-turn:last-child { margin-bottom: 0; }
.pf-response pre, .pf-prompt pre { white-space: pre-wrap; padding: 0.5em; border-radius: 4px;
  background: var(--background-fill-secondary); }
.pf-notice { padding: 1em; font-size: 1.1em; }

/* The prompt and the two response cards. */
#pf-prompt { border: 1px solid var(--border-color-primary); border-radius: var(--radius-lg); padding: 12px 16px;
  background: var(--background-fill-secondary); }
.pf-cards { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 12px; align-items: start; }
.pf-card { border: 1px solid var(--border-color-primary); border-radius: var(--radius-lg);
  background: var(--background-fill-primary); min-width: 0; }
.pf-card-head { display: flex; align-items: center; gap: 8px; padding: 8px 12px;
  border-bottom: 1px solid var(--border-color-primary); background: var(--background-fill-secondary);
  border-radius: var(--radius-lg) var(--radius-lg) 0 0; }
.pf-card .pf-pane-label { opacity: 1; text-transform: none; font-size: 1em; font-weight: 700; }
#pf-prompt .html-container, #pf-cards .html-container, #pf-progress .html-container { padding: 0 !important; }
.pf-badge { display: inline-flex; align-items: center; justify-content: center; width: 1.8em; height: 1.8em;
  border-radius: 50%; font-weight: 700; color: white; background: var(--color-accent); }
section.pf-card:nth-of-type(2) .pf-badge { background: #7c3aed; }  /* B, wherever cards are shown */
.pf-pane-body { padding: 4px 16px 12px; }
.pf-pane-body table, .pf-prompt table { border-collapse: collapse; margin: 0.5em 0; border: none;
  display: block; width: max-content; max-width: 100%; overflow-x: auto; }
.pf-pane-body th, .pf-pane-body td, .pf-prompt th, .pf-prompt td { border: 1px solid var(--border-color-primary);
  padding: 4px 8px; }
.pf-align-left { text-align: left; } .pf-align-center { text-align: center; } .pf-align-right { text-align: right; }
@media (max-width: 720px) { .pf-cards { grid-template-columns: minmax(0, 1fr); } }

/* Raw text or rendered Markdown: both are in the page; the toggle puts pf-show-raw on <body>. Gradio copies each
   rule under a more specific .gradio-container prefix, which a rule about <body> cannot match: hence !important. */
pre.pf-raw { display: none; white-space: pre-wrap; overflow-wrap: anywhere; font-size: 0.9em; margin: 0.5em 0; }
body.pf-show-raw pre.pf-raw { display: block !important; }
body.pf-show-raw .pf-md { display: none !important; }

/* My progress. */
#pf-toolbar { align-items: center; flex-wrap: nowrap; gap: 12px; }
#pf-raw { flex: 0 0 auto !important; width: auto; padding: 6px 10px; }
.pf-progress-text { font-size: 0.95em; }
.pf-progress-bar { display: block; width: 100%; height: 8px; margin-top: 4px; border: none; border-radius: 4px;
  -webkit-appearance: none; appearance: none; background: var(--border-color-primary); overflow: hidden; }
.pf-progress-bar::-webkit-progress-bar { background: var(--border-color-primary); }
.pf-progress-bar::-webkit-progress-value { background: var(--color-accent); }
.pf-progress-bar::-moz-progress-bar { background: var(--color-accent); }

/* The choice bar stays on screen at the bottom, however long the responses are. */
#pf-bar { position: fixed; left: 0; right: 0; bottom: 0; z-index: 100; gap: 4px; min-width: 0;
  padding: 8px max(12px, calc((100vw - 1400px) / 2)); background: var(--background-fill-primary);
  border-top: 1px solid var(--border-color-primary); box-shadow: 0 -4px 12px rgba(0, 0, 0, 0.08); }
#pf-bar-row { display: grid; gap: 6px; align-items: stretch;
  grid-template-columns: minmax(160px, 1fr) repeat(6, auto); }
#pf-bar-row > * { min-width: 0 !important; }
#pf-bar-row button { white-space: nowrap; }
/* An empty notice or list takes no room (the component's wrapper is never :empty itself). */
#pf-bar-notice:not(:has(.pf-inline)), #pf-edit-notice:not(:has(.pf-inline)), #pf-recent:not(:has(.pf-recent)),
#pf-cards:not(:has(.pf-cards)) { display: none; }
.gradio-container:has(#pf-bar) { padding-bottom: __BAR_SPACE__ !important; }
/* Nothing to label (the prompt shows a notice instead): the choices rest; Undo still works. */
.gradio-container:has(#pf-prompt .pf-notice) #pf-bar-row button:not(#pf-btn-undo) { opacity: 0.4;
  pointer-events: none; }
@media (max-width: 720px) {
  #pf-bar { padding: 6px 8px; }
  #pf-bar-row { grid-template-columns: repeat(3, minmax(0, 1fr)); gap: 4px; }
  #pf-bar-row > :first-child { grid-column: 1 / -1; }
  #pf-bar-row button { padding: 6px 4px; font-size: 0.9em; }
}

/* Notices beside the control that caused them. */
#pf-edit-row { flex-wrap: wrap; align-items: center; }
#pf-edit-row > #pf-btn-edit { flex: 0 0 auto !important; }
#pf-edit-row > #pf-edit-notice { flex: 1 1 240px !important; }
.pf-inline { padding: 4px 10px; border-radius: 4px; font-size: 0.9em; border-left: 4px solid; }
.pf-inline-info { border-color: #2563eb; background: var(--background-fill-secondary); }
.pf-inline-warn { border-color: #d97706; background: var(--background-fill-secondary); }

/* My recent labels. */
.pf-recent { font-size: 0.9em; }
.pf-recent-head { font-weight: 600; opacity: 0.7; text-transform: uppercase; font-size: 0.85em; }
.pf-recent ol { margin: 4px 0 0 1.2em; padding: 0; }
.pf-recent-choice { font-weight: 600; }
.pf-recent-prompt { opacity: 0.75; }
.pf-recent-discarded { font-style: italic; opacity: 0.75; }
.pf-sampling { opacity: 0.8; }
@media (max-width: 720px) { .pf-sampling { display: block; } .pf-sampling .pf-sep { display: none; } }

/* The review tab: one comparison's labels as a list, the decision buttons in a row (wrapping on a phone). */
.pf-review-head { overflow-wrap: anywhere; }
.pf-review-decided { margin-top: 4px; font-size: 0.95em; }
ul.pf-labels { list-style: none; margin: 4px 0 0; padding: 0; display: grid; gap: 6px; }
ul.pf-labels li.pf-label { margin: 0; padding: 6px 10px; border: 1px solid var(--border-color-primary);
  border-radius: var(--radius-lg); background: var(--background-fill-primary); overflow-wrap: anywhere; }
.pf-label-choice { font-weight: 700; }
.pf-label-who { font-weight: 600; }
.pf-label-meta { opacity: 0.7; font-size: 0.9em; }
.pf-label-rationale { white-space: pre-wrap; margin-top: 2px; }
.pf-label-none { opacity: 0.55; font-style: italic; }
li.pf-label-out { opacity: 0.55; }
ul.pf-labels li.pf-label-adjudication { border-left: 4px solid var(--color-accent); }
#pf-review-nav { align-items: end; flex-wrap: wrap; }
#pf-review-buttons { flex-wrap: wrap; }
#pf-review-buttons > button { flex: 1 1 120px; min-width: 0 !important; white-space: nowrap; }
#pf-review-result:not(:has(.pf-inline)) { display: none; }
""".replace("__BAR_SPACE__", BAR_SPACE)
