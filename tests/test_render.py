"""The server-side sanitiser: untrusted Markdown renders to HTML that cannot run script, load remote content or
restyle the page; code blocks and safe links survive."""

import re

import pytest

from app.render import render_markdown, render_messages, render_response

# Each payload must come out with no live tag or attribute that runs, loads or styles anything.
PAYLOADS = [
    "<script>window.__pwned = 1</script>",
    "<img src=x onerror=\"window.__pwned = 1\">",
    "<svg onload=\"window.__pwned = 1\"></svg>",
    "<iframe src=\"https://evil.example/\"></iframe>",
    "<style>body { display: none }</style>",
    "<a href=\"javascript:window.__pwned = 1\">click</a>",
    "[click](javascript:window.__pwned=1)",
    "[click](JaVaScRiPt:window.__pwned=1)",
    "[click](&#106;avascript:window.__pwned=1)",
    "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[click](vbscript:msgbox)",
    "![tracker](https://evil.example/pixel.png)",
    "![x](https://evil.example/x.png \"onerror=alert(1)\")",
    "<div style=\"position:fixed;top:0;left:0;width:100%;height:100%\">overlay</div>",
    "<link rel=stylesheet href=https://evil.example/x.css>",
    "<meta http-equiv=refresh content=\"0;url=https://evil.example\">",
    "<object data=\"https://evil.example/x.swf\"></object>",
    "<form action=\"https://evil.example\"><input name=x></form>",
    "```\n</code></pre><script>window.__pwned = 1</script>\n```",
    "`<script>window.__pwned = 1</script>`",
    "[x](https://ok.example \"a\\\" onmouseover=\\\"window.__pwned=1\")",
    "<https://evil.example/\" onmouseover=\"window.__pwned=1>",
    "${alert(1)} {{constructor.constructor('window.__pwned=1')()}}",
]

LIVE_TAGS = re.compile(r"<\s*(script|style|iframe|img|svg|object|embed|link|meta|form|input|base|video|audio|source)\b",
                       re.IGNORECASE)
LIVE_ATTRS = re.compile(r"<[^>]*\s(on\w+|style|src|srcset|formaction)\s*=", re.IGNORECASE)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payloads_render_inert(payload):
    out = render_markdown(payload)
    assert not LIVE_TAGS.search(out), out
    assert not LIVE_ATTRS.search(out), out
    for href in re.findall(r'href="([^"]*)"', out):
        assert href.startswith(("http://", "https://", "mailto:")), out


def test_raw_html_shows_as_text():
    assert render_markdown("<b>bold</b> <script>x()</script>") == \
        "<p>&lt;b&gt;bold&lt;/b&gt; &lt;script&gt;x()&lt;/script&gt;</p>\n"


def test_images_become_their_alt_text():
    out = render_markdown("see ![a <b>chart</b>](https://evil.example/c.png)")
    assert "<img" not in out and "evil.example" not in out
    assert "[image: a &lt;b&gt;chart&lt;/b&gt;]" in out


def test_safe_links_open_with_noopener_and_unsafe_schemes_stay_text():
    out = render_markdown("[docs](https://example.org/x?a=1&b=2) and [mail](mailto:a@b.c)")
    assert '<a href="https://example.org/x?a=1&amp;b=2" rel="noopener noreferrer nofollow" target="_blank">' in out
    assert 'href="mailto:a@b.c"' in out
    for bad in ("javascript:x()", "data:text/html,x", "file:///etc/passwd", "/relative", "ftp://x.y/"):
        assert "<a " not in render_markdown(f"[x]({bad})"), bad


def test_code_blocks_keep_their_text_escaped():
    out = render_markdown("```python\nif a < b:\n    print('<tag>')\n```")
    assert out.startswith('<pre><code class="language-python">')
    assert "if a &lt; b:" in out and "&lt;tag&gt;" in out


def test_messages_render_every_turn_with_escaped_roles():
    out = render_messages([{"role": "system", "content": "be *brief*"}, {"role": "user", "content": "hi"},
                           {"role": "<img src=x onerror=1>", "content": "x"}])
    assert out.count('class="pf-turn') == 3 and "<em>brief</em>" in out
    assert "<img" not in out
    assert "<script" not in render_response("<script>", "<script>x</script>")
