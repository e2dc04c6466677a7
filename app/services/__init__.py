"""The operations a person can ask prefloop for, one module per thing they do; the CLI, the JSON API and the
web UI call these and hold no logic of their own. Every function takes an `App` (workdir.App) and returns plain
data; a refusal is a ServiceError (errors.py), whatever layer it came from."""
