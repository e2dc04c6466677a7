"""The console's annotators tab: accounts (add, reset a password, disable, change role, revoke tokens), how each
person labels (counts, time per label), the quality of their labels (agreement with the others, gold accuracy, the
hold-back, with releasing or discarding held labels) and the agreement between people (alpha, kappa per pair)."""

import html

import gradio as gr

from app.services import accounts
from app.services import annotators as people_views
from app.services import quality as quality_service
from app.services.errors import ServiceError
from app.ui.common import EVENT, bind, operator_only, section, user_name
from app.ui.console.training_parts import num

ACCOUNT_COLUMNS = ["name", "role", "status", "created (UTC)", "last label (UTC)"]
PEOPLE_COLUMNS = ["person", "labels", "today", "last 7 days", "skips", "median s / label", "timed"]
PEOPLE_HELP = (
    "People's labels only (imports and judges are not people); skips and discarded labels are not counted as "
    "labels. **today**: since 00:00 UTC. **median s / label**: the median time from a comparison being shown "
    "to the click, over the **timed** labels (the web page measures it on the server; API clients report their "
    "own).")
QUALITY_COLUMNS = ["person", "held back", "majority agreement", "kappa", "pairs", "alpha without",
                   "gold accuracy", "recent gold"]
QUALITY_HELP = (
    "Agreement counts comparisons two or more people labelled, never gold questions; a, b, tie and both bad are "
    "four different answers. **majority agreement**: how often their label matches the strict majority of the "
    "others' labels on the same comparison, of the comparisons where the others have one. **kappa**: Cohen's "
    "kappa of their labels against each other person's (**pairs**), agreement beyond chance (1 perfect, 0 "
    "chance); per person below. **alpha without**: the team's alpha with their labels left out; above the "
    "team's alpha, they lower the agreement. **gold accuracy**: right answers to gold questions, of all they "
    "answered; **recent gold**: over their latest answers, which decide the hold-back. A **held back** person's "
    "labels stay stored and count here, but resolve no pair until an operator releases or discards them.")
ROUND_COLUMNS = ["round", "alpha", "comparisons", "labels"]
PAIR_COLUMNS = ["person", "with", "compared", "agreement", "kappa"]
TAU_COLUMNS = ["kind", "person", "with", "compared", "tau-b"]
AGREEMENT_HELP = (
    "**alpha**: Krippendorff's alpha over every comparison two or more people labelled (1 perfect agreement, 0 "
    "chance, below 0 worse than chance; missing labels allowed), per round of the comparisons' model version. "
    "Each pair of people below: Cohen's kappa over the comparisons both labelled.")
SECRET_LABEL = "New password, shown this once: copy it and give it to them"
HELD_UNPICKED = "Pick a held-back person first (nobody is held back when the list is empty)."


def build(app, triggers) -> None:
    table, name, role, password, add_button, who, new_role, buttons, result, secret = _accounts_section()
    with section("How each person labels", elem_id="pf-people"):
        people = gr.Dataframe(headers=PEOPLE_COLUMNS, interactive=False, elem_id="pf-people-table",
                              label="People", show_label=False)
        gr.Markdown(PEOPLE_HELP, elem_id="pf-people-help")
    quality, held, reason, release_button, discard_button, held_result = _quality_section()
    alpha, rounds, pairs, orders, taus = _agreement_section()
    # After an action the tables refresh quietly: a loading overlay over them would hide the outcome's context.
    views = [table, people, who, quality, held, alpha, rounds, pairs, orders, taus]
    tables = {"fn": bind(refresh_people, app), "inputs": [who, held], "outputs": views, **EVENT,
              "show_progress": "hidden"}
    # Opening the console or Refresh also clears an outcome and a password shown earlier: a password shows once.
    gr.on(triggers, bind(open_people, app), [who, held], [*views, result, secret, held_result], **EVENT)
    release_button.click(bind(release_labels, app), held, held_result, **EVENT).then(**tables)
    discard_button.click(bind(discard_labels, app), [held, reason], [held_result, reason], **EVENT).then(**tables)
    add_button.click(bind(add_account, app), [name, role, password], [result, secret, name, password],
                     **EVENT).then(**tables)
    role_button, reset_button, revoke_button, enable_button, disable_button = buttons
    who.change(bind(account_role, app), who, new_role, **EVENT, show_progress="hidden")
    reset_button.click(bind(reset_account_password, app), who, [result, secret], **EVENT).then(**tables)
    for button, change, inputs in ((role_button, change_role, [who, new_role]),
                                   (disable_button, disable_account, who), (enable_button, enable_account, who),
                                   (revoke_button, revoke_account_tokens, who)):
        button.click(bind(change, app), inputs, [result, secret], **EVENT).then(**tables)


def _accounts_section():
    with section("Accounts", elem_id="pf-accounts"):
        table = gr.Dataframe(headers=ACCOUNT_COLUMNS, interactive=False, elem_id="pf-accounts-table",
                             label="Accounts", show_label=False)
        with gr.Row():
            name = gr.Textbox(label="New user's name", max_lines=1, elem_id="pf-new-name")
            role = gr.Radio(list(accounts.ROLES), value="annotator", label="Role", elem_id="pf-new-role")
            password = gr.Textbox(label="Password (leave empty to generate one)", type="password", max_lines=1,
                                  elem_id="pf-new-password")
            add_button = gr.Button("Add user", variant="primary", scale=0, min_width=140, elem_id="pf-btn-add-user")
        with gr.Row():
            who = gr.Dropdown(label="Account", choices=[], value=None, elem_id="pf-account")
            new_role = gr.Radio(list(accounts.ROLES), value="annotator", label="Role", elem_id="pf-account-role")
            role_button = gr.Button("Change role", scale=0, min_width=140, elem_id="pf-btn-set-role")
        with gr.Row():
            reset_button = gr.Button("Reset password", elem_id="pf-btn-reset-password")
            revoke_button = gr.Button("Revoke API tokens", elem_id="pf-btn-revoke-tokens")
            enable_button = gr.Button("Enable", elem_id="pf-btn-enable")
            disable_button = gr.Button("Disable", variant="stop", elem_id="pf-btn-disable")
        result = gr.HTML(elem_id="pf-account-result")
        secret = gr.Textbox(label=SECRET_LABEL, interactive=False, visible=False, buttons=["copy"],
                            elem_id="pf-new-secret")
    buttons = (role_button, reset_button, revoke_button, enable_button, disable_button)
    return table, name, role, password, add_button, who, new_role, buttons, result, secret


def _quality_section():
    with section("Quality of each person's labels", elem_id="pf-quality"):
        quality = gr.Dataframe(headers=QUALITY_COLUMNS, interactive=False, elem_id="pf-quality-table",
                               label="Label quality", show_label=False)
        gr.Markdown(QUALITY_HELP, elem_id="pf-quality-help")
        with gr.Row():
            held = gr.Dropdown(label="Held-back person", choices=[], value=None, elem_id="pf-held")
            reason = gr.Textbox(label="Reason (needed to discard; kept in the audit trail)", max_lines=1,
                                elem_id="pf-held-reason")
        with gr.Row():
            release_button = gr.Button("Release held labels", elem_id="pf-btn-release-held")
            discard_button = gr.Button("Discard held labels", variant="stop", elem_id="pf-btn-discard-held")
        held_result = gr.HTML(elem_id="pf-held-result")
    return quality, held, reason, release_button, discard_button, held_result


def _agreement_section():
    with section("Agreement between people", elem_id="pf-agreement"):
        alpha = gr.Markdown(elem_id="pf-alpha")
        rounds = gr.Dataframe(headers=ROUND_COLUMNS, interactive=False, elem_id="pf-alpha-rounds",
                              label="Alpha per round")
        pairs = gr.Dataframe(headers=PAIR_COLUMNS, interactive=False, elem_id="pf-kappa-pairs",
                             label="Cohen's kappa per pair of people")
        gr.Markdown(AGREEMENT_HELP, elem_id="pf-agreement-help")
        orders = gr.Markdown(elem_id="pf-tau")
        taus = gr.Dataframe(headers=TAU_COLUMNS, interactive=False, elem_id="pf-tau-pairs", visible=False,
                            label="Kendall's tau-b per pair of people (rankings, and ratings by overall score)")
    return alpha, rounds, pairs, orders, taus


# -- handlers: each reads its inputs and calls one service; a refusal is a sentence beside the controls -------------
@operator_only
def refresh_people(app, selected: str | None, held: str | None, request: gr.Request):
    """The accounts, people, quality and agreement tables, and the account and held-person pickers (keeping their
    choices while they are still there)."""
    return _tables(app, selected, held)


@operator_only
def open_people(app, selected: str | None, held: str | None, request: gr.Request):
    """refresh_people, and the outcome and password slots cleared."""
    return *_tables(app, selected, held), "", _secret(None), ""


@operator_only
def release_labels(app, name: str | None, request: gr.Request):
    try:
        done = quality_service.release_held(app, _picked(name, HELD_UNPICKED), user_name(request))
    except ServiceError as refused:
        return _said(refused)
    return _said(f"{done['message']} They count towards pairs now; labels {name} gives while their recent gold "
                 "accuracy stays low are held again.", "info")


@operator_only
def discard_labels(app, name: str | None, reason: str, request: gr.Request):
    try:
        done = quality_service.discard_held(app, _picked(name, HELD_UNPICKED), user_name(request),
                                            (reason or "").strip())
    except ServiceError as refused:
        return _said(refused), gr.skip()
    return _said(f"{done['message']} The labels are kept but count for nothing.", "info"), ""


@operator_only
def add_account(app, name: str, role: str, password: str, request: gr.Request):
    name = (name or "").strip()
    try:
        _, generated = accounts.add_user(app, name, role, password or None, actor=user_name(request))
    except ServiceError as refused:
        return _said(refused), _secret(None), gr.skip(), gr.skip()
    told = f"Added {name} as {accounts.with_article(role)}." + (
        " Their password is below, shown this once." if generated else "")
    return _said(told, "info"), _secret(generated), "", ""


@operator_only
def account_role(app, name: str | None, request: gr.Request):
    """The role picker beside the account picker shows the picked person's role now."""
    role = accounts.stored_role(app, name)
    return gr.update(value=role) if role else gr.update()


@operator_only
def reset_account_password(app, name: str | None, request: gr.Request):
    try:
        generated = accounts.reset_password(app, _picked(name), user_name(request))
    except ServiceError as refused:
        return _said(refused), _secret(None)
    return _said(f"New password for {name}, shown below this once; their API tokens were revoked.", "info"), \
        _secret(generated)


@operator_only
def change_role(app, name: str | None, role: str, request: gr.Request):
    return _outcome(app, accounts.set_role, name, role, user_name(request),
                    done=f"{name} is now {accounts.with_article(role)}.")


@operator_only
def disable_account(app, name: str | None, request: gr.Request):
    return _outcome(app, accounts.set_disabled, name, True, user_name(request),
                    done=f"Disabled {name}: they cannot log in, label or use the API; their labels stay.")


@operator_only
def enable_account(app, name: str | None, request: gr.Request):
    return _outcome(app, accounts.set_disabled, name, False, user_name(request),
                    done=f"Enabled {name}: they can log in again.")


@operator_only
def revoke_account_tokens(app, name: str | None, request: gr.Request):
    try:
        revoked = accounts.revoke_tokens(app, _picked(name), user_name(request))
    except ServiceError as refused:
        return _said(refused), _secret(None)
    return _said(f"Revoked {revoked} API token(s) of {name}: their scripts must log in again.", "info"), \
        _secret(None)


# -- pieces ---------------------------------------------------------------------------------------------------------
def _tables(app, selected: str | None, held: str | None) -> tuple:
    view = people_views.people(app)
    names = [a.name for a in view.accounts]
    picker = gr.update(choices=names, value=selected if selected in names else None)
    holding = [p.name for p in view.labelling if p.held]
    held_picker = gr.update(choices=holding, value=held if held in holding else (holding[0] if holding else None))
    together = view.reliability
    return (_accounts_frame(view.accounts), _people_frame(view.labelling), picker,
            _quality_frame(view.labelling), held_picker, _alpha_text(together), _rounds_frame(together.rounds),
            _pairs_frame(together.pairs), _orders_text(together.orders), _taus_frame(together.orders))


def _outcome(app, change, name: str | None, *args, done: str):
    """Run an account change on the picked account: (the outcome sentence, the password slot hidden)."""
    try:
        change(app, _picked(name), *args)
    except ServiceError as refused:
        return _said(refused), _secret(None)
    return _said(done, "info"), _secret(None)


def _picked(name: str | None, unpicked: str = "Pick an account first.") -> str:
    if not name:
        raise ServiceError(unpicked)
    return name


def _said(message, kind: str = "warn") -> str:
    """One sentence beside the controls; the message may carry names typed by a person, so it is escaped."""
    text = str(message)
    text = text if text.endswith((".", "!", "?")) else text + "."
    return f'<div class="pf-inline pf-inline-{kind}" role="status">{html.escape(text)}</div>'


def _secret(password: str | None):
    return gr.update(value=password or "", visible=bool(password))


def _when(t) -> str:
    return f"{t:%Y-%m-%d %H:%M}" if t else "never"


def _accounts_frame(rows):
    import pandas as pd

    return pd.DataFrame([[a.name, a.role, "enabled" if a.enabled else "disabled", _when(a.created_at),
                          _when(a.last_label_at)] for a in rows], columns=ACCOUNT_COLUMNS)


def _people_frame(rows):
    import pandas as pd

    return pd.DataFrame([[p.name, p.labels, p.today, p.week, p.skips, num(p.median_s, 1), p.timed] for p in rows],
                        columns=PEOPLE_COLUMNS)


def _quality_frame(rows):
    import pandas as pd

    return pd.DataFrame([[p.name, _held(p), _of(p.majority_agreement, p.majority_compared), num(p.kappa, 2),
                          p.pairs or "", num(p.alpha_without, 2), _of(p.gold_accuracy, p.gold_answered),
                          _of(p.gold_recent_accuracy, p.gold_recent_answered)] for p in rows],
                        columns=QUALITY_COLUMNS)


def _held(person) -> str:
    if not person.held:
        return ""
    return f"HELD: {person.held_labels} label(s)" if person.held_labels else "HELD: none waiting"


def _of(share: float | None, whole: int) -> str:
    """'0.80 of 10': a share with what it is of; empty before there is anything."""
    return f"{share:.2f} of {whole}" if share is not None and whole else ""


def _alpha_text(together) -> str:
    if together.alpha is not None:
        return (f"**Krippendorff's alpha:** {together.alpha:.2f} over {together.units} comparison(s) labelled by "
                f"two or more people ({together.values} labels).")
    if together.units:
        return (f"**Krippendorff's alpha:** undefined over {together.units} comparison(s): every label there is "
                "the same answer.")
    return "**Krippendorff's alpha:** not yet: no comparison has labels from two or more people."


def _orders_text(orders) -> str:
    if not orders:
        return ""
    return " ".join(f"**Kendall's tau-b on {o.kind}s:** {num(o.tau_b, 2) or 'undefined'} over {o.comparisons} "
                    f"comparison(s) ordered by two or more people." for o in orders)


def _taus_frame(orders):
    """The tau-b table, shown only once anything was ordered (most teams compare pairs alone)."""
    import pandas as pd

    rows = [[p.kind, p.first, p.second, p.compared, num(p.tau_b, 2)] for o in orders for p in o.pairs]
    return gr.update(value=pd.DataFrame(rows, columns=TAU_COLUMNS), visible=bool(orders))


def _rounds_frame(rows):
    import pandas as pd

    return pd.DataFrame([[r.round, num(r.alpha, 2), r.units, r.values] for r in rows], columns=ROUND_COLUMNS)


def _pairs_frame(rows):
    import pandas as pd

    return pd.DataFrame([[p.first, p.second, p.compared, num(p.agreement, 2), num(p.kappa, 2)] for p in rows],
                        columns=PAIR_COLUMNS)
