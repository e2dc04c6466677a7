"""The console's annotators tab: accounts (add, reset a password, disable, change role, revoke tokens) and how
each person labels (counts, agreement, time per label)."""

import html

import gradio as gr

from app.services import accounts
from app.services import annotators as people_views
from app.services.errors import ServiceError
from app.ui.common import EVENT, bind, operator_only, section, user_name
from app.ui.console.training_parts import num

ACCOUNT_COLUMNS = ["name", "role", "status", "created (UTC)", "last label (UTC)"]
PEOPLE_COLUMNS = ["person", "labels", "today", "last 7 days", "skips", "median s / label", "timed",
                  "agreement", "kappa", "pairs"]
PEOPLE_HELP = (
    "People's labels only (imports and judges are not people); skips and discarded labels are not counted as "
    "labels. **today**: since 00:00 UTC. **median s / label**: the median time from a comparison being shown "
    "to the click, over the **timed** labels (the web page measures it on the server; API clients report their "
    "own). **agreement**: on comparisons someone else labelled too, the share of their labels that match "
    "another person's (each other person once per comparison: **pairs**; both bad counts as a tie); **kappa**: "
    "Cohen's kappa over those pairs, agreement beyond chance (1 perfect, 0 chance).")
SECRET_LABEL = "New password, shown this once: copy it and give it to them"


def build(app, triggers) -> None:
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
    with section("How each person labels", elem_id="pf-people"):
        people = gr.Dataframe(headers=PEOPLE_COLUMNS, interactive=False, elem_id="pf-people-table",
                              label="People", show_label=False)
        gr.Markdown(PEOPLE_HELP, elem_id="pf-people-help")
    # After an action the tables refresh quietly: a loading overlay over them would hide the outcome's context.
    tables = {"fn": bind(refresh_people, app), "inputs": who, "outputs": [table, people, who], **EVENT,
              "show_progress": "hidden"}
    # Opening the console or Refresh also clears an outcome and a password shown earlier: a password shows once.
    gr.on(triggers, bind(open_people, app), who, [table, people, who, result, secret], **EVENT)
    add_button.click(bind(add_account, app), [name, role, password], [result, secret, name, password],
                     **EVENT).then(**tables)
    reset_button.click(bind(reset_account_password, app), who, [result, secret], **EVENT).then(**tables)
    for button, change, inputs in ((role_button, change_role, [who, new_role]),
                                   (disable_button, disable_account, who), (enable_button, enable_account, who),
                                   (revoke_button, revoke_account_tokens, who)):
        button.click(bind(change, app), inputs, [result, secret], **EVENT).then(**tables)


# -- handlers: each reads its inputs and calls one service; a refusal is a sentence beside the controls -------------
@operator_only
def refresh_people(app, selected: str | None, request: gr.Request):
    """The accounts and people tables, and the account picker (keeping its choice)."""
    return _tables(app, selected)


@operator_only
def open_people(app, selected: str | None, request: gr.Request):
    """refresh_people, and the outcome and password slots cleared."""
    return *_tables(app, selected), "", _secret(None)


@operator_only
def add_account(app, name: str, role: str, password: str, request: gr.Request):
    name = (name or "").strip()
    try:
        _, generated = accounts.add_user(app, name, role, password or None, actor=user_name(request))
    except ServiceError as refused:
        return _said(refused), _secret(None), gr.skip(), gr.skip()
    told = f"Added {name} as an {role}." + (" Their password is below, shown this once." if generated else "")
    return _said(told, "info"), _secret(generated), "", ""


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
    return _outcome(app, accounts.set_role, name, role, user_name(request), done=f"{name} is now an {role}.")


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
def _tables(app, selected: str | None) -> tuple:
    view = people_views.people(app)
    names = [a.name for a in view.accounts]
    picker = gr.update(choices=names, value=selected if selected in names else None)
    return _accounts_frame(view.accounts), _people_frame(view.labelling), picker


def _outcome(app, change, name: str | None, *args, done: str):
    """Run an account change on the picked account: (the outcome sentence, the password slot hidden)."""
    try:
        change(app, _picked(name), *args)
    except ServiceError as refused:
        return _said(refused), _secret(None)
    return _said(done, "info"), _secret(None)


def _picked(name: str | None) -> str:
    if not name:
        raise ServiceError("Pick an account first.")
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

    return pd.DataFrame([[p.name, p.labels, p.today, p.week, p.skips, num(p.median_s, 1), p.timed,
                          num(p.agreement, 2), num(p.kappa, 2), p.pairs] for p in rows], columns=PEOPLE_COLUMNS)
