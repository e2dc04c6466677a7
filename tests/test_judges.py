"""Judges for real: the verdict format, both-order position-bias control, a python rule, the tiny model as an llm
judge, an OpenAI-compatible endpoint served over loopback HTTP, and a tiny random reward model."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from generation.judges import (
    PAIR_SYSTEM,
    JudgeConfig,
    JudgeItem,
    PythonJudge,
    Verdict,
    judge_both_orders,
    load_function,
    make_judge,
    pair_messages,
    parse_verdict,
    prefer_shorter,
)

PROMPT = [{"role": "user", "content": "Name a prime number."}]


# -- the answer format -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, choice", [
    ("A is more precise. [[A]]", "a"),
    ("Verdict: [[B]]", "b"),
    ("Both are fine. [[C]]", "tie"),
    ("[[ B ]] since it is correct", "b"),
    ("I prefer A. [[A]] Final answer: [[A]]", "a"),
])
def test_a_single_verdict_tag_is_parsed(text, choice):
    v = parse_verdict(text)
    assert v.choice == choice and v.raw == text


@pytest.mark.parametrize("text", ["", None, "A is better", "[A]", "[[D]]", "first [[A]] then [[B]]", "[[a]]"])
def test_no_or_conflicting_verdicts_abstain(text):
    assert parse_verdict(text).choice == "abstain"


def test_the_rationale_is_the_text_before_the_verdict():
    assert parse_verdict("  A names 7, which is prime.\n[[A]]").rationale == "A names 7, which is prime."


def test_the_pair_prompt_holds_the_conversation_and_both_answers_in_order():
    messages = pair_messages(PROMPT, "two", "nine")
    assert messages[0] == {"role": "system", "content": PAIR_SYSTEM}
    assert "[[A]]" in PAIR_SYSTEM and "[[B]]" in PAIR_SYSTEM and "[[C]]" in PAIR_SYSTEM
    user = messages[1]["content"]
    assert "Name a prime number." in user
    assert user.index("[Answer A]\ntwo") < user.index("[Answer B]\nnine")
    multi = pair_messages([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                           {"role": "user", "content": "a prime?"}], "2", "4")[1]["content"]
    assert "user: hi\n\nassistant: hello\n\nuser: a prime?" in multi


# -- both orders and the python rule path ------------------------------------------------------------------------
def items(*pairs):
    return [JudgeItem(PROMPT, a, b) for a, b in pairs]


def test_a_consistent_rule_keeps_its_verdict_in_both_orders():
    judge = PythonJudge(prefer_shorter)
    out = judge_both_orders(judge, items(("7", "seven, a prime"), ("eleven is", "2"), ("ab", "cd")))
    assert [p.verdict.choice for p in out] == ["a", "b", "tie"]
    assert [p.outcome for p in out] == ["consistent"] * 3
    assert out[0].first.choice == "a" and out[0].second.choice == "a"  # the second is mapped back to A/B


def test_a_verdict_that_flips_with_the_order_becomes_a_tie():
    always_first = PythonJudge(lambda _p, _a, _b: "a", name="first")
    (p,) = judge_both_orders(always_first, items(("x", "y")))
    assert (p.verdict.choice, p.outcome, p.first.choice, p.second.choice) == ("tie", "flipped", "a", "b")
    assert "position bias" in p.verdict.rationale


def test_errors_and_non_answers_abstain_never_label():
    def broken(_p, a, _b):
        if a == "boom":
            raise RuntimeError("rule crashed")
        return None if a == "none" else 42

    out = judge_both_orders(PythonJudge(broken, name="broken"), items(("boom", "x"), ("none", "y"), ("z", "w")))
    assert [p.outcome for p in out] == ["abstain"] * 3
    assert "rule crashed" in out[0].verdict.rationale


def test_python_judge_loads_module_function():
    judge = make_judge(JudgeConfig(kind="python", function="generation.judges:prefer_shorter", name="short"))
    assert judge.name == "short" and judge.judge(PROMPT, "2", "twenty").choice == "a"
    with pytest.raises(ValueError, match="module:function"):
        load_function("generation.judges.prefer_shorter")
    with pytest.raises(ValueError, match="judge.function"):
        make_judge(JudgeConfig(kind="python"))
    with pytest.raises(ValueError, match="unknown judge kind"):
        make_judge(JudgeConfig(kind="oracle"))


def test_a_python_rule_is_found_in_the_current_folder_and_a_wrong_one_is_named_in_one_line(tmp_path, monkeypatch):
    import uuid

    module = f"rule_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text("def longer(prompt, a, b):\n    return 'a' if len(a) > len(b) else 'b'\n")
    (tmp_path / f"{module}_broken.py").write_text("import no_such_module_here\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))  # the folder added for this test goes after it
    judge = make_judge(JudgeConfig(kind="python", function=f"{module}:longer"))
    assert judge.judge(PROMPT, "twenty", "2").choice == "a"
    with pytest.raises(ValueError, match=rf"^judge.function '{module}:shorter': module {module} has no 'shorter'$"):
        load_function(f"{module}:shorter")
    with pytest.raises(ValueError, match=r"no module named 'mymod_missing' on the Python path or in the current"):
        load_function("mymod_missing:rule")
    with pytest.raises(ValueError, match=r"no module named 'no_such_module_here'"):
        load_function(f"{module}_broken:rule")


def test_the_judge_verb_says_a_missing_rule_in_one_line(tiny_app, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from app.cli import cli

    app = tiny_app()
    monkeypatch.chdir(tmp_path)
    for function, says in (("nosuchmod_q:rule", "no module named 'nosuchmod_q'"),
                           ("generation.judges:prefer_shortr", "has no 'prefer_shortr'")):
        result = CliRunner().invoke(cli, ["--workdir", str(app.workdir), "--set", "judge.kind=python",
                                          "--set", f"judge.function={function}", "judge"])
        assert result.exit_code != 0 and says in result.output, result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


# -- llm: the tiny model through the hf backend ------------------------------------------------------------------
def test_llm_judge_runs_the_tiny_model_in_both_orders(tiny_model_dir):
    from generation.backends import load_backend

    backend = load_backend("hf", str(tiny_model_dir), device="cpu")
    seen = []
    generate = backend.generate
    backend.generate = lambda prompts, n, params: seen.append((prompts, params)) or generate(prompts, n, params)
    judge = make_judge(JudgeConfig(kind="llm", name="tiny", max_new_tokens=8), backend=backend)
    with judge:
        out = judge_both_orders(judge, items(("2", "4"), ("x" * 3000, "y")))
    (prompts, params), = seen
    assert len(prompts) == 4  # both items, both orders, one batch
    assert prompts[0] == pair_messages(PROMPT, "2", "4") and prompts[2] == pair_messages(PROMPT, "4", "2")
    assert params.temperature < 1e-3 and params.max_new_tokens == 8  # greedy
    # A random tiny model almost never writes a clean [[A]]/[[B]]/[[C]]: whatever it wrote was parsed, not guessed.
    for p in out:
        for v in (p.first, p.second):
            assert v.choice in ("a", "b", "tie", "abstain")
            assert v.choice == parse_verdict(v.raw).choice or "skipped" in v.rationale
    # A judge prompt longer than the model's context is an abstain, not an error.
    assert out[1].outcome == "abstain" and "skipped" in out[1].verdict.rationale


# -- openai: a real chat completions server on loopback ----------------------------------------------------------
class ChatServer:
    """An OpenAI-compatible /v1/chat/completions; its behaviour is picked by the request's model name."""

    def __init__(self):
        self.requests: list[dict] = []
        self.headers: list[str | None] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.headers.append(self.headers.get("Authorization"))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    attempt = sum(r["model"] == body["model"] for r in server.requests)
                try:
                    status, payload = server.answer(body, attempt, self.path)
                    data = payload.encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @staticmethod
    def completion(content: str) -> str:
        return json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "model": "m", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]})

    def answer(self, body: dict, attempt: int, path: str) -> tuple[int, str]:
        if path != "/v1/chat/completions":
            return 404, "{}"
        model, user = body["model"], body["messages"][-1]["content"]
        if model == "good" or (model == "flaky" and attempt > 1):
            better = "A" if user.index("GOOD") < user.index("[Answer B]") else "B"
            return 200, self.completion(f"Answer {better} is correct. [[{better}]]")
        if model == "slow":
            time.sleep(0.3)
            return 200, self.completion("[[A]]")
        if model == "malformed":
            return 200, self.completion("They are both interesting answers.")
        if model == "not-json":
            return 200, "<html>oops</html>"
        if model == "bad-request":
            return 400, '{"error": "bad"}'
        return 500, '{"error": "server error"}'  # error500, and flaky's first attempt


@pytest.fixture(scope="module")
def chat_server():
    server = ChatServer()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def openai_judge(url, model, **kw):
    cfg = JudgeConfig(kind="openai", name="api", base_url=url, model=model, backoff_s=0.01,
                      api_key_env="TEST_JUDGE_KEY", **kw)
    return make_judge(cfg, environ={"TEST_JUDGE_KEY": "sk-test"})


def test_openai_judge_success_in_both_orders_with_the_key(chat_server):
    with openai_judge(chat_server.url, "good", concurrency=2) as judge:
        out = judge_both_orders(judge, items(("GOOD answer", "bad answer"), ("bad", "GOOD")))
    assert [(p.verdict.choice, p.outcome) for p in out] == [("a", "consistent"), ("b", "consistent")]
    sent = [r for r in chat_server.requests if r["model"] == "good"]
    assert len(sent) == 4 and sent[0]["temperature"] == 0.0 and sent[0]["messages"][0]["role"] == "system"
    assert set(chat_server.headers) == {"Bearer sk-test"}
    assert chat_server.max_in_flight <= 2


@pytest.mark.parametrize("model", ["malformed", "not-json"])
def test_openai_malformed_answers_abstain_without_retrying(chat_server, model):
    with openai_judge(chat_server.url, model) as judge:
        assert judge.judge(PROMPT, "x", "y").choice == "abstain"
    assert sum(r["model"] == model for r in chat_server.requests) == 1


def test_openai_timeout_retries_then_abstains(chat_server):
    with openai_judge(chat_server.url, "slow", timeout_s=0.05, max_retries=1) as judge:
        v = judge.judge(PROMPT, "x", "y")
    assert v.choice == "abstain" and "timed out" in v.rationale
    assert sum(r["model"] == "slow" for r in chat_server.requests) == 2


def test_openai_http_500_retries_then_abstains_and_a_retry_can_succeed(chat_server):
    with openai_judge(chat_server.url, "error500", max_retries=2) as judge:
        v = judge.judge(PROMPT, "x", "y")
    assert v.choice == "abstain" and "HTTP 500" in v.rationale
    assert sum(r["model"] == "error500" for r in chat_server.requests) == 3
    with openai_judge(chat_server.url, "flaky", max_retries=2) as judge:
        assert judge.judge(PROMPT, "GOOD", "no").choice == "a"
    with openai_judge(chat_server.url, "bad-request", max_retries=2) as judge:
        assert judge.judge(PROMPT, "x", "y").choice == "abstain"
    assert sum(r["model"] == "bad-request" for r in chat_server.requests) == 1  # a 4xx is not retried


def test_openai_unreachable_endpoint_abstains(chat_server):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with openai_judge(f"http://127.0.0.1:{port}/v1", "good", max_retries=1) as judge:
        assert judge.judge(PROMPT, "x", "y").choice == "abstain"


# -- reward-model: a tiny random sequence classifier ------------------------------------------------------------
@pytest.fixture(scope="module")
def reward_model_dir(tiny_model_dir, tmp_path_factory):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512, num_labels=1,
                         pad_token_id=pad)
    out = tmp_path_factory.mktemp("reward-model")
    LlamaForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_reward_model_judge_scores_each_response_and_ties_below_the_margin(reward_model_dir):
    pairs = items(("7 is prime.", "Nine."), ("Two", "The number 13 is prime."), ("same", "same"))
    with make_judge(JudgeConfig(kind="reward-model", model_path=str(reward_model_dir), margin=0.0,
                                device="cpu")) as judge:
        scores = judge.scores([judge.text(PROMPT, r) for i in pairs for r in (i.response_a, i.response_b)])
        out = judge_both_orders(judge, pairs)
        assert isinstance(judge.judge(PROMPT, "a", "b"), Verdict)
    for k, p in enumerate(out):
        raw = json.loads(p.first.raw)
        sa, sb = raw["score_a"], raw["score_b"]
        assert (sa, sb) == pytest.approx((scores[2 * k], scores[2 * k + 1]), abs=1e-4)
        expected = "tie" if sa == sb else ("a" if sa > sb else "b")
        assert p.verdict.choice == expected and p.outcome == "consistent"  # scores do not depend on the order
        assert p.verdict.confidence is not None and 0.5 <= p.verdict.confidence <= 1
    gap = max(abs(scores[0] - scores[1]), abs(scores[2] - scores[3]))
    with make_judge(JudgeConfig(kind="reward-model", model_path=str(reward_model_dir), margin=gap + 1,
                                device="cpu")) as wide:
        assert {p.verdict.choice for p in judge_both_orders(wide, pairs)} == {"tie"}
