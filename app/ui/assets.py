"""The page's own CSS and JavaScript, passed to Gradio once when the server mounts the UI: the label view's cards
(a pair's, a ranking's, a rating's, a thumbs item's), fixed choice bar, raw-text toggle, keyboard shortcuts, ranks
and scores given by keys, clicks and drag, scrolling back up to a new comparison, and the review tab's labels.
Nothing here touches untrusted text."""

import json

from app.ui.label import CHOICE_BUTTONS, KIND_BUTTONS, RAW_KEY, UNDO_KEY

# key -> the elements it clicks, the first one shown (a key may serve several kinds: Enter submits a ranking or
# ratings, whichever is shown).
_KEYS: dict[str, list[str]] = {}
for *_, _key, _elem in (*CHOICE_BUTTONS, *KIND_BUTTONS, (UNDO_KEY, "pf-btn-undo"), (RAW_KEY, "pf-raw")):
    _KEYS.setdefault(_key.lower(), []).append(_elem)

# Keyboard shortcuts: keys typed into a text field are left alone, and Enter on a focused button or link is that
# button's. The raw toggle's id is on its wrapper: the click goes to the checkbox inside it, so Gradio sees the
# same change as a mouse click.
_SHORTCUTS_JS = """
  const keys = __KEYS__;
  document.addEventListener('keydown', (e) => {
    const t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    if (t && (t.tagName === 'TEXTAREA' || t.tagName === 'INPUT' || t.tagName === 'SELECT' || t.isContentEditable))
      return;
    if (pf.typed(e)) return;
    if (e.key === 'Enter' && t && t.closest && t.closest('button, a, summary')) return;
    const target = (keys[e.key.toLowerCase()] || []).map((id) => document.getElementById(id))
      .map((found) => found && (found.matches('button') ? found : found.querySelector('input')))
      .find((found) => found && found.offsetParent !== null);
    if (target && !target.disabled) { e.preventDefault(); target.click(); }
  });
"""

# Rankings and ratings: what the annotator gives stays in the cards (each slot's data-given: a ranking card's rank,
# a Likert row's score) until Submit sends it (pfGiven, label.GIVEN_JS). A number key gives the focused slot, or
# else the first empty one, that number and moves on to the next empty slot; 0, Backspace or Delete clears it.
# Dragging a ranking card by its header ranks the cards in their new order, keeping ties of neighbours it left
# alone. Submit is enabled once every slot has its number.
_GIVEN_JS = """
  const SUBMIT = {ranking: 'pf-btn-rank', rating: 'pf-btn-rate'};
  const pf = {};
  pf.root = () => document.querySelector('#pf-cards .pf-cards');
  pf.slots = () => [...(pf.root()?.querySelectorAll('[data-slot]') || [])];
  pf.value = (slot) => Number(slot.dataset.given || 0);
  pf.current = () => { const all = pf.slots();
    return all.find((s) => s.contains(document.activeElement)) || all.find((s) => !pf.value(s)) || null; };
  pf.set = (slot, n) => {
    slot.dataset.given = n ? String(n) : '';
    slot.classList.toggle('pf-given', !!n);
    for (const b of slot.querySelectorAll('.pf-pick'))
      b.setAttribute('aria-pressed', String(b.dataset.pick === slot.dataset.given));
    const shown = slot.querySelector('.pf-given-shown');
    if (shown) shown.textContent = n ? String(n) : '–';
  };
  pf.refresh = () => {
    const root = pf.root(), all = pf.slots();
    const done = all.filter(pf.value).length;
    for (const [kind, id] of Object.entries(SUBMIT)) {
      const button = document.getElementById(id);
      const disabled = done < all.length;
      if (button && root && root.dataset.kind === kind && button.disabled !== disabled) button.disabled = disabled;
    }
    const status = root && root.querySelector('.pf-given-status');
    const verb = root && root.dataset.kind === 'ranking' ? 'ranked' : 'rated';
    const said = `(${done} of ${all.length} ${verb})`;
    if (status && SUBMIT[root.dataset.kind] && status.textContent !== said) status.textContent = said;
    const next = pf.current();
    all.forEach((s) => s.classList.toggle('pf-current', s === next));
  };
  pf.give = (slot, n, move) => {
    pf.set(slot, n);
    const next = n && move ? pf.slots().find((s) => !pf.value(s)) : null;
    if (next) { next.focus({preventScroll: true}); next.scrollIntoView({block: 'nearest'}); }
    pf.refresh();
  };
  pf.typed = (e) => {
    const slot = pf.root() && /^[0-9]$|^Backspace$|^Delete$/.test(e.key) ? pf.current() : null;
    if (!slot) return false;
    const n = /^[0-9]$/.test(e.key) ? Number(e.key) : 0;
    if (n > Number(slot.dataset.top)) return false;
    e.preventDefault();
    pf.give(slot, n, true);
    return true;
  };
  window.pfGiven = () => {
    const root = pf.root();
    if (!root || !SUBMIT[root.dataset.kind]) return '';
    if (root.dataset.kind === 'ranking') {
      const ranking = [];
      for (const s of pf.slots()) ranking[Number(s.dataset.position)] = pf.value(s) || null;
      return JSON.stringify({ranking});
    }
    const ratings = {};
    for (const s of pf.slots()) (ratings[s.dataset.criterion] ||= [])[Number(s.dataset.position)] = pf.value(s) || null;
    return JSON.stringify({ratings});
  };
  document.addEventListener('click', (e) => {
    const pick = e.target.closest && e.target.closest('#pf-cards .pf-pick');
    if (!pick) return;
    const slot = pick.closest('[data-slot]');
    slot.focus({preventScroll: true});  // Enter then submits, not this button again
    pf.give(slot, Number(pick.dataset.pick), false);
  });
  document.addEventListener('focusin', () => pf.root() && pf.refresh());
  let dragged = null;
  document.addEventListener('dragstart', (e) => {
    dragged = e.target.closest && e.target.closest('#pf-cards .pf-rank-card');
    if (!dragged) return;
    e.dataTransfer.effectAllowed = 'move';
    e.dataTransfer.setData('text/plain', dragged.dataset.position);
    dragged.classList.add('pf-dragging');
  });
  document.addEventListener('dragover', (e) => {
    if (dragged && e.target.closest && e.target.closest('#pf-cards .pf-rank-card')) e.preventDefault();
  });
  document.addEventListener('drop', (e) => {
    const onto = dragged && e.target.closest && e.target.closest('#pf-cards .pf-rank-card');
    if (!onto) return;
    e.preventDefault();
    if (onto === dragged) return;
    const box = onto.getBoundingClientRect();
    onto.parentNode.insertBefore(dragged, e.clientY > box.top + box.height / 2 ? onto.nextSibling : onto);
    pf.rankByOrder(dragged);
  });
  document.addEventListener('dragend', () => { dragged?.classList.remove('pf-dragging'); dragged = null; });
  pf.rankByOrder = (moved) => {
    let before = null, beforeRank = 0;
    pf.slots().forEach((card, i) => {
      const old = pf.value(card);
      const tied = before && old && old === beforeRank && card !== moved && before !== moved;
      beforeRank = old;
      pf.set(card, tied ? pf.value(before) : i + 1);
      before = card;
    });
    pf.refresh();
  };
"""

# A new comparison starts at its top: after a click far down a long response, the next prompt is in view. Gradio
# patches the cards' HTML in place (the same elements, their attributes and text replaced), so new cards are seen
# by any change at all: refresh is cheap and writes only what differs, which ends the loop it starts.
_NEW_CARDS_JS = """
  let shown = null;
  new MutationObserver(() => {
    const root = pf.root();
    if (root) pf.refresh();
    const id = root?.dataset.comparison || null;
    if (id === shown) return;
    shown = id;
    const top = document.getElementById('pf-toolbar');
    if (top && top.getBoundingClientRect().top < 0) window.scrollTo({top: 0});
  }).observe(document.body, {childList: true, subtree: true});
"""

KEYBOARD_JS = "() => {" + _GIVEN_JS + _SHORTCUTS_JS.replace("__KEYS__", json.dumps(_KEYS)) + _NEW_CARDS_JS + "}"

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
#pf-bar-row { display: grid; gap: 6px; align-items: stretch; grid-auto-flow: column;
  grid-template-columns: minmax(160px, 1fr); grid-auto-columns: auto; }
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
  #pf-bar-row { grid-template-columns: repeat(3, minmax(0, 1fr)); grid-auto-flow: row; gap: 4px; }
  .gradio-container:has(.pf-cards[data-kind="thumbs"]) #pf-bar-row { grid-template-columns: repeat(4, minmax(0, 1fr)); }
  #pf-bar-row > :first-child { grid-column: 1 / -1; }
  #pf-bar-row button { padding: 6px 4px; font-size: 0.9em; }
}

/* Rankings, ratings and thumbs. The bar offers what the kind shown takes (its cards' data-kind): a pair's choices
   (and the edit), Submit ranking, Submit ratings, or Good and Bad; Skip and Undo always. The label tab is the
   rules' anchor: Gradio copies each rule under its own prefix (rules inside @media only so), which a rule about
   .gradio-container itself cannot match, and it splits :is() lists at their commas. */
#pf-btn-rank, #pf-btn-rate, #pf-btn-up, #pf-btn-down { display: none; }
#pf-label-tab:has(.pf-cards[data-kind="ranking"]) #pf-btn-rank,
#pf-label-tab:has(.pf-cards[data-kind="rating"]) #pf-btn-rate,
#pf-label-tab:has(.pf-cards[data-kind="thumbs"]) #pf-btn-up,
#pf-label-tab:has(.pf-cards[data-kind="thumbs"]) #pf-btn-down { display: inline-flex; }
#pf-label-tab:has(#pf-cards .pf-cards:not([data-kind="pair"])) #pf-btn-left,
#pf-label-tab:has(#pf-cards .pf-cards:not([data-kind="pair"])) #pf-btn-right,
#pf-label-tab:has(#pf-cards .pf-cards:not([data-kind="pair"])) #pf-btn-tie,
#pf-label-tab:has(#pf-cards .pf-cards:not([data-kind="pair"])) #pf-btn-both-bad,
#pf-label-tab:has(#pf-cards .pf-cards:not([data-kind="pair"])) #pf-edit { display: none; }
#pf-bar-row button:disabled { opacity: 0.45; cursor: not-allowed; }
.pf-cards.pf-kind-ranking, .pf-cards.pf-kind-thumbs { grid-template-columns: minmax(0, 1fr); }
.pf-cards.pf-kind-rating { grid-template-columns: repeat(auto-fit, minmax(min(100%, 420px), 1fr)); }
/* A response keeps its letter wherever it is dragged: one colour for every letter (a pair's B is purple). */
.pf-cards:not(.pf-kind-pair) section.pf-card .pf-badge { background: var(--color-accent); }
.pf-guide { grid-column: 1 / -1; font-size: 0.95em; opacity: 0.85; }
.pf-given-status { font-weight: 600; white-space: nowrap; }
.pf-rank-card .pf-card-head { flex-wrap: wrap; cursor: grab; }
.pf-drag { opacity: 0.55; font-size: 1.2em; line-height: 1; }
.pf-rank-shown { margin-left: auto; display: inline-flex; align-items: center; gap: 6px; font-weight: 600; }
.pf-given-shown { display: inline-flex; align-items: center; justify-content: center; min-width: 2em; height: 2em;
  border-radius: 6px; border: 2px dashed var(--border-color-primary); font-size: 1.1em; }
.pf-given .pf-given-shown { background: var(--color-accent); border: 2px solid var(--color-accent); color: white; }
.pf-picks { display: inline-flex; flex-wrap: wrap; gap: 4px; }
.pf-pick { min-width: 2.3em; height: 2.3em; padding: 0 6px; border: 1px solid var(--border-color-primary);
  border-radius: 6px; background: var(--background-fill-primary); color: inherit; font-weight: 600; cursor: pointer;
  transition: none; }
.pf-pick:hover { border-color: var(--color-accent); }
.pf-pick[aria-pressed="true"] { background: var(--color-accent); border-color: var(--color-accent); color: white; }
.pf-current { outline: 2px dashed var(--color-accent); outline-offset: 2px; }
.pf-rank-card:focus, .pf-rate-row:focus { outline: 3px solid var(--color-accent); outline-offset: 2px; }
.pf-dragging { opacity: 0.5; }
.pf-rate-rows { display: grid; gap: 6px; padding: 8px 10px 10px; border-top: 1px solid var(--border-color-primary); }
.pf-rate-row { display: flex; flex-wrap: wrap; align-items: center; gap: 4px 12px; padding: 4px 6px;
  border-radius: 6px; }
.pf-rate-name { flex: 1 1 180px; min-width: 0; }
.pf-criterion { font-weight: 700; }
.pf-help { display: block; font-size: 0.85em; opacity: 0.75; }
@media (max-width: 720px) {
  .pf-rank-card .pf-picks { flex: 1 0 100%; justify-content: flex-end; }
  #pf-label-tab:has(.pf-cards[data-kind="ranking"]) #pf-bar-row,
  #pf-label-tab:has(.pf-cards[data-kind="rating"]) #pf-bar-row { grid-template-columns: 2fr 1fr 1fr; }
  #pf-label-tab:has(.pf-cards[data-kind="thumbs"]) #pf-bar-row { grid-template-columns: repeat(4, minmax(0, 1fr)); }
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
