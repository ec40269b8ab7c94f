"""The product speaks to its users: tracked files outside tests/ cite no issue numbers, no work
logs or dated working sessions, no internal notes, and no machine-lending procedure."""
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: (name, compiled pattern): each matches a phrase that talks about the project's workflow
#: instead of the product.  Chosen not to match colours (#333, #f4f4f4), anchors (#section),
#: HTML entities (&#39;), shebangs, or words like "tensorboard session" and "gpu_session.sh".
PATTERNS = [
    ("issue number", re.compile(r"\b(?:issues?|tickets?)\s*#?\d+\b|\b(?:PRs?|pull requests?)\s*#\d+\b", re.I)),
    ("bare #N reference", re.compile(r"(?:^|(?<=[\s(\[,]))#\d{1,4}(?=[\s).,;:\]]|$)", re.M)),
    ("the issue's ...", re.compile(r"\bthe issue'?s\b", re.I)),
    ("work-log session", re.compile(r"\bsession\s+\d+\b|\bsession\s*#\s*\d+", re.I)),
    ("this/that session", re.compile(r"\b(?:this|that|previous|earlier|later|next|last|current|same)\s+session\b",
                                     re.I)),
    ("session's time", re.compile(r"\bsession'?s\s+(?:time|budget|limit)\b", re.I)),
    ("BRIEF", re.compile(r"\bBRIEF\b|(?i:\bbrief\.md\b|\bthe brief\b)")),
    ("device time", re.compile(r"\bdevice[- ]time\b", re.I)),
    ("lent / lending", re.compile(r"\blent\b|\blending\b|\blends?\s+(?:a|the)\s+(?:GPU|machine)", re.I)),
    ("give_back", re.compile(r"\bgive_back\b")),
    ("device tool / machine", re.compile(r"\bdevice[- ](?:tool|machine)\b", re.I)),
    ("carry list", re.compile(r"\bcarry\s*\[")),
]
#: a #N hit preceded by ':' or '=' (CSS "color: #333", "fill=#123") is a colour, not an issue
COLOUR_CONTEXT = re.compile(r"[:=]\s*['\"]?$")
TEXT_SUFFIXES = {".py", ".md", ".txt", ".sh", ".toml", ".cfg", ".ini", ".json", ".yaml", ".yml", ".csv",
                 ".html", ".log", ""}


#: embedded images (base64 in the HTML reports) are data, not text
DATA_URI = re.compile(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+")


def findings(text: str) -> list[tuple[str, str]]:
    """(pattern name, matched text) of every workflow phrase in ``text``."""
    text = DATA_URI.sub("data:", text)
    out = []
    for name, pat in PATTERNS:
        for m in pat.finditer(text):
            if name == "bare #N reference" and COLOUR_CONTEXT.search(text[max(0, m.start() - 8):m.start()]):
                continue
            out.append((name, m.group(0)))
    return out


BAD = [
    "One full Pong game on every backend (issue #5)",
    "acceptance thresholds of issue 5",
    "see #12 for the details",
    "(fixed in #3)",
    "merged in PR #42",
    "outside the issue's \"within 1 point\"",
    "Shipped in session 3: the final checkpoint",
    "2026-11-29, session 5",
    "when this session's time ran out",
    "measured in this session",
    "Reference (BRIEF section 2): G_t = W + F_t",
    "H200 measurement (BRIEF.md §5)",
    "as the brief says",
    "A session lent the GPU machine has ~15 minutes of it",
    "no GPU was lent",
    "budget of device time",
    "call give_back when done",
    "device tool: run with carry [\".whl\"], timeout 600",
    "One device-machine run",
]
GOOD = [
    "pre{background:#f4f4f4;padding:.6em}",
    "td{color: #333; border:1px solid #bbb}",
    "ax.bar(x, y, color='#4c72b0')",
    '<img src="data:image/png;base64,iVBORw0KGgoPr6Issue5AAA=">',
    "Pr6 and pr16 in a random token",
    'fill="#123"',
    "see [the energy section](#energy-of-this-game)",
    "&#39;quoted&#39;",
    "#!/usr/bin/env bash",
    "x = 1  # 2 bits of headroom",
    "open a tensorboard session to watch the curves",
    "bash scripts/gpu_session.sh writes session.log to $OUT",
    "this is a brief summary of the device",
    "the issue tracker of Brian 2",
    "a silent column: the update is a pure decay",
    "measured on an H200 with NVML's total-energy counter, 2026-11",
    "the device model's time constant",
    "Excellent results",
]


@pytest.mark.parametrize("text", BAD)
def test_patterns_catch_workflow_phrases(text):
    assert findings(text), text


@pytest.mark.parametrize("text", GOOD)
def test_patterns_leave_product_text_alone(text):
    assert not findings(text), findings(text)


def _tracked_product_files():
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for name in out.decode().split("\0"):
        if not name or name.startswith("tests/"):
            continue
        path = ROOT / name
        if path.suffix.lower() in TEXT_SUFFIXES and path.is_file():
            yield name, path


def test_tracked_files_outside_tests_speak_about_the_product():
    bad = []
    for name, path in _tracked_product_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for i, line in enumerate(text.splitlines(), 1):
            for what, hit in findings(line):
                bad.append(f"{name}:{i}: {what}: {hit!r}")
    assert not bad, "\n".join(bad)
